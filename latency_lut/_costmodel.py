"""A non-negative linear per-operator cost model: ``latency_ms = intercept + sum_j coef_j * feature_j``.

Features come from :func:`latency_lut._features.graph_features` (per op class MACs, bytes, op counts).
Coefficients and intercept are fitted by non-negative least squares, so every op costs time, never
saves it. The fit minimises *relative* error by default (each row scaled by ``1 / latency``), columns
are scaled to unit weighted RMS for conditioning, and an optional iteratively re-weighted pass turns the
squared loss into an absolute-relative-error (L1) loss that conflicting sources do not drag around.

A feature name may be a ``+``-joined sum of raw feature keys (``"conv_dense.macs+conv_pointwise.macs"``),
so a model stays self-describing in its JSON form. Serialisation is plain, versioned JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from search_space import RepNASError

__all__ = [
    "FORMAT_VERSION",
    "CostModel",
    "CostModelError",
    "clear_cost_model_cache",
    "feature_value",
    "fit",
    "fit_matrix",
    "load_cost_model_file",
    "summarize_calibration",
]

FORMAT_VERSION = 1
"""Version of the JSON layout written by :meth:`CostModel.to_json`."""


class CostModelError(RepNASError, ValueError):
    """A cost model cannot be fitted, loaded or applied (bad data, malformed JSON, unpriceable module)."""


def feature_value(features: Mapping[str, float], name: str) -> float:
    """Value of feature ``name`` (a raw key or a ``+``-joined sum of raw keys) in ``features``.

    Raises:
        CostModelError: A raw key is missing.
    """
    total = 0.0
    for key in name.split("+"):
        try:
            total += float(features[key])
        except KeyError:
            raise CostModelError(f"feature {key!r} (needed by {name!r}) is missing from the features") from None
    return total


def feature_matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    """``len(rows) x len(names)`` matrix of :func:`feature_value` (a design matrix; shape kept when empty)."""
    names = tuple(names)
    return np.array([[feature_value(r, nm) for nm in names] for r in rows], dtype=float).reshape(len(rows), len(names))


@dataclass(frozen=True)
class CostModel:
    """Fitted cost model.

    Attributes:
        feature_names: Names of the features the coefficients multiply (see :func:`feature_value`).
        coefficients: Milliseconds per unit of each feature, all ``>= 0``.
        intercept_ms: Fixed cost of any model (``>= 0``).
        provenance: Free-form JSON-compatible record of where the fit came from (data, versions, options,
            validation results). Not compared by ``==``.
    """

    feature_names: tuple[str, ...]
    coefficients: tuple[float, ...]
    intercept_ms: float = 0.0
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_names", tuple(str(n) for n in self.feature_names))
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        object.__setattr__(self, "intercept_ms", float(self.intercept_ms))
        if len(self.feature_names) != len(self.coefficients):
            raise CostModelError(
                f"{len(self.feature_names)} feature names but {len(self.coefficients)} coefficients"
            )
        if len(set(self.feature_names)) != len(self.feature_names):
            raise CostModelError(f"duplicate feature names in {self.feature_names}")
        bad = [(n, c) for n, c in zip(self.feature_names, self.coefficients) if not (math.isfinite(c) and c >= 0)]
        if bad or not (math.isfinite(self.intercept_ms) and self.intercept_ms >= 0):
            raise CostModelError(
                f"coefficients and intercept must be finite and non-negative; got {bad or ''} "
                f"intercept {self.intercept_ms}"
            )

    def predict(self, features: Mapping[str, float]) -> float:
        """Predicted latency in milliseconds for one feature dict."""
        return self.intercept_ms + sum(
            c * feature_value(features, n) for n, c in zip(self.feature_names, self.coefficients)
        )

    @property
    def version(self) -> str:
        """Short identity of this fit (format, creation time, calibration CSV hash), stored with every LUT row."""
        prov = self.provenance or {}
        sha = str((prov.get("csv") or {}).get("sha256", ""))[:12] or "unknown-csv"
        return f"v{FORMAT_VERSION} {prov.get('created', 'uncreated')} csv:{sha}"

    def contributions(self, features: Mapping[str, float]) -> dict[str, float]:
        """Milliseconds each term adds for ``features`` (``"intercept"`` included); they sum to :meth:`predict`."""
        out = {"intercept": self.intercept_ms}
        out.update({n: c * feature_value(features, n) for n, c in zip(self.feature_names, self.coefficients)})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form (``format_version`` included)."""
        return {
            "format_version": FORMAT_VERSION,
            "kind": "nonnegative-linear-cost-model",
            "intercept_ms": self.intercept_ms,
            "features": [{"name": n, "coefficient": c} for n, c in zip(self.feature_names, self.coefficients)],
            "provenance": _json_safe(dict(self.provenance)),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """Serialise to JSON text (floats round-trip exactly; NaN is written as ``null``)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> CostModel:
        """Inverse of :meth:`to_dict`.

        Raises:
            CostModelError: The data is not a cost model of a supported ``format_version``.
        """
        if not isinstance(data, dict):
            raise CostModelError(f"cost model JSON must be an object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CostModelError(
                f"unsupported cost model format_version {version!r} (this code reads version {FORMAT_VERSION})"
            )
        try:
            feats = data["features"]
            names = [f["name"] for f in feats]
            coefs = [f["coefficient"] for f in feats]
            intercept = data["intercept_ms"]
        except (KeyError, TypeError) as e:
            raise CostModelError(f"malformed cost model JSON: missing or bad field ({e!r})") from None
        if not all(isinstance(n, str) for n in names) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in [*coefs, intercept]
        ):
            raise CostModelError("malformed cost model JSON: feature names must be strings, numbers numeric")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise CostModelError("malformed cost model JSON: 'provenance' must be an object")
        return cls(tuple(names), tuple(coefs), intercept, provenance)

    @classmethod
    def from_json(cls, text: str | bytes) -> CostModel:
        """Parse JSON text written by :meth:`to_json`.

        Raises:
            CostModelError: The text is not valid JSON or not a supported cost model.
        """
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise CostModelError(f"cost model is not valid JSON: {e}") from None
        return cls.from_dict(data)


@lru_cache(maxsize=8)
def _read_cost_model(path: str) -> CostModel:
    return CostModel.from_json(Path(path).read_text(encoding="utf-8"))


def load_cost_model_file(path: str | Path, *, what: str = "cost model", hint: str = "") -> CostModel:
    """The cost model stored at ``path`` (read once per process; :func:`clear_cost_model_cache` forgets it).

    Raises:
        CostModelError: The file cannot be read (the message names ``what`` and ends with ``hint``) or is not a
            supported cost model.
    """
    try:
        return _read_cost_model(str(path))
    except OSError as e:
        raise CostModelError(f"cannot read the {what} {path}: {e}{hint}") from None


def clear_cost_model_cache() -> None:
    """Forget every cost model read so far (after a calibration rewrote one)."""
    _read_cost_model.cache_clear()


def summarize_calibration(model: CostModel, *, device: str, calibrated_on: str) -> dict[str, Any]:
    """What to show next to a figure predicted by ``model``: its LOFO table and overall figures (provenance).

    The LOFO figures are the nested ones where the model was selected among candidates;
    ``lofo_unnested_mean_mape_pct`` is the plain LOFO of the shipped candidate.

    Returns:
        ``{"predicted": True, "note", "families": [{"family", "n_models", "n_rows", "mape_pct", "median_ape_pct",
        "bias_pct", "spearman", "mape_best_quality_pct", "chosen", "meets_goal"}], "lofo_kind",
        "lofo_mean_mape_pct", "lofo_max_mape_pct", "lofo_mean_spearman", "lofo_mean_mape_best_quality_pct",
        "lofo_overall_median_ape_pct", "lofo_overall_spearman", "lofo_worst_median_ape_pct" (over the families
        with enough models to be judged against the goals),
        "lofo_unnested_mean_mape_pct", "in_sample_mape_pct", "model", "created", "csv_sha256"}``. A model
        calibrated before per-family medians were recorded reports ``None`` for them.
    """
    prov = model.provenance
    lofo = prov.get("lofo") or {}
    goals = (prov.get("goals") or {}).get("families", {})
    fams = [{**{k: f.get(k) for k in ("family", "n_models", "n_rows", "mape_pct", "median_ape_pct", "bias_pct",
                                      "spearman", "mape_best_quality_pct", "chosen")},
             "meets_goal": (goals.get(f.get("family")) or {}).get("meets")}
            for f in lofo.get("families", [])]
    judged = [f for f in fams if f["median_ape_pct"] is not None and f["meets_goal"] is not None]
    medians = [f["median_ape_pct"] for f in judged or fams if f["median_ape_pct"] is not None]
    overall = lofo.get("overall_median_ape_pct")
    mean = lofo.get("mean_mape_pct")
    kind = prov.get("lofo_kind", "plain")
    nested = "nested " if kind == "nested" else ""
    if overall is not None:
        note = (f"{device} latencies are PREDICTED by a cost model calibrated on {calibrated_on}, not measured; "
                f"{nested}leave-one-family-out median error {overall:.1f}% over all families, "
                f"{max(medians):.0f}% in the worst validated family")
    elif mean is not None:
        note = (f"{device} latencies are PREDICTED by a cost model calibrated on {calibrated_on}, not measured; "
                f"{nested}leave-one-family-out error {mean:.1f}% MAPE")
    else:
        note = f"{device} latencies are PREDICTED, not measured (no validation record)"
    return {
        "predicted": True,
        "note": note,
        "families": fams,
        "lofo_kind": kind,
        "lofo_mean_mape_pct": mean,
        "lofo_max_mape_pct": lofo.get("max_mape_pct"),
        "lofo_mean_spearman": lofo.get("mean_spearman"),
        "lofo_mean_mape_best_quality_pct": lofo.get("mean_mape_best_quality_pct"),
        "lofo_overall_median_ape_pct": overall,
        "lofo_overall_spearman": lofo.get("overall_spearman"),
        "lofo_worst_median_ape_pct": max(medians) if medians else None,
        "lofo_unnested_mean_mape_pct": (prov.get("lofo_unnested") or {}).get("mean_mape_pct"),
        "in_sample_mape_pct": (prov.get("in_sample") or {}).get("mape_pct"),
        "model": (prov.get("model_selection") or {}).get("chosen"),
        "created": prov.get("created"),
        "csv_sha256": (prov.get("csv") or {}).get("sha256"),
    }


def _json_safe(obj: Any) -> Any:
    """Replace non-finite floats by ``None`` and tuples by lists, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def fit(
        feature_rows: Sequence[Mapping[str, float]],
        latencies_ms: Sequence[float],
        *,
        feature_names: Sequence[str],
        weights: Sequence[float] | None = None,
        relative: bool = True,
        fit_intercept: bool = True,
        loss: str = "l2",
        irls_iterations: int = 30,
        min_coefficients: Mapping[str, float] | None = None,
        ridge: Mapping[str, float] | None = None,
        provenance: Mapping[str, Any] | None = None,
) -> CostModel:
    """Fit a :class:`CostModel` by (weighted) non-negative least squares.

    Args:
        feature_rows: One feature dict per observation.
        latencies_ms: Observed latency of each row (positive).
        feature_names: Features to use (raw keys or ``+``-joined sums).
        weights: Non-negative weight of each row (default 1).
        relative: Minimise relative error ``(pred - y) / y`` instead of absolute error.
        fit_intercept: Fit a non-negative fixed cost; otherwise it is 0.
        loss: ``"l2"`` (squared error) or ``"l1"`` (absolute error, by iteratively re-weighted least squares).
        irls_iterations: Re-weighting passes for ``loss="l1"``.
        min_coefficients: Lower bounds (ms per unit, ``>= 0``) of some coefficients by feature name, e.g. a
            physical floor on the cost of a MAC; the others are bounded by 0.
        ridge: Shrinkage of some coefficients towards their lower bound, by feature name: ``alpha``
            pseudo-rows, each as strong as a typical row that has the feature, demanding that it be free. A
            feature ``m`` rows exercise alike keeps about ``m / (m + alpha)`` of its unshrunk price, so a price
            only a few rows support (one family's residual) stays small.
        provenance: Stored on the model as is.

    Returns:
        The fitted model; coefficients are in milliseconds per raw feature unit.

    Raises:
        CostModelError: Inputs are empty, inconsistent or not finite.
    """
    names = tuple(feature_names)
    x = feature_matrix(feature_rows, names)
    coefs, intercept = fit_matrix(x, latencies_ms, names, weights=weights, relative=relative,
                                  fit_intercept=fit_intercept, loss=loss, irls_iterations=irls_iterations,
                                  min_coefficients=min_coefficients, ridge=ridge)
    return CostModel(names, coefs, intercept, dict(provenance or {}))


def fit_matrix(
        x: np.ndarray,
        latencies_ms: Sequence[float],
        feature_names: Sequence[str],
        *,
        weights: Sequence[float] | None = None,
        relative: bool = True,
        fit_intercept: bool = True,
        loss: str = "l2",
        irls_iterations: int = 30,
        min_coefficients: Mapping[str, float] | None = None,
        ridge: Mapping[str, float] | None = None,
) -> tuple[tuple[float, ...], float]:
    """:func:`fit` on a ready feature matrix ``x`` (rows x ``feature_names``): ``(coefficients, intercept)``.

    Calibration fits the same rows thousands of times (selection, nested validation); building the matrix
    once and calling this is what keeps that fast.
    """
    from scipy.optimize import nnls

    y = np.asarray(latencies_ms, dtype=float)
    n = x.shape[0]
    names = tuple(feature_names)
    if n == 0 or y.shape != (n,):
        raise CostModelError(f"need one latency per feature row and at least one row; got {n} rows, {y.shape}")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise CostModelError("latencies must be finite and positive")
    if loss not in ("l1", "l2"):
        raise CostModelError(f"loss must be 'l1' or 'l2', got {loss!r}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise CostModelError("weights must be finite, non-negative, one per row, and not all zero")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise CostModelError("features must be finite and non-negative")
    lower = np.zeros(len(names))
    for name, lb in dict(min_coefficients or {}).items():
        if name not in names:
            raise CostModelError(f"min_coefficients names {name!r}, which is not one of the features")
        if not (math.isfinite(float(lb)) and float(lb) >= 0):
            raise CostModelError(f"min_coefficients[{name!r}] must be finite and non-negative, got {lb!r}")
        lower[names.index(name)] = float(lb)
    floor_ms = x @ lower  # the part of every prediction the lower bounds fix
    if fit_intercept:
        x = np.hstack([x, np.ones((n, 1))])
        lower = np.append(lower, 0.0)

    row_scale = np.sqrt(w) / (y if relative else 1.0)
    a = x * row_scale[:, None]
    col_scale = np.sqrt(np.mean(a**2, axis=0))
    col_scale[col_scale == 0] = 1.0
    a = a / col_scale
    b = (y - floor_ms) * row_scale  # coefficients above their lower bounds are fitted non-negative
    penalties = []
    for name, alpha in dict(ridge or {}).items():
        if name not in names:
            raise CostModelError(f"ridge names {name!r}, which is not one of the features")
        if not (math.isfinite(float(alpha)) and float(alpha) >= 0):
            raise CostModelError(f"ridge[{name!r}] must be finite and non-negative, got {alpha!r}")
        j = names.index(name)
        used = a[:, j] != 0
        row = np.zeros(a.shape[1])  # alpha pseudo-rows, each as strong as a typical row that has the feature
        row[j] = math.sqrt(float(alpha) * float(np.mean(a[used, j] ** 2))) if used.any() else 0.0
        penalties.append(row)
    if penalties:
        a, b = np.vstack([a, *penalties]), np.append(b, np.zeros(len(penalties)))
    eps = 1e-3 * max(float(np.median(np.abs(y * row_scale))), 1e-12)

    irls = np.ones(len(b))
    for _ in range(irls_iterations if loss == "l1" else 1):
        sol, _ = nnls(a * irls[:, None], b * irls, maxiter=50 * a.shape[1] + 100)
        if loss == "l1":  # re-weight the data rows only; the penalty rows stay quadratic
            resid = np.abs(a[:n] @ sol - b[:n])
            irls[:n] = 1.0 / np.sqrt(np.maximum(resid, eps))
    coef = sol / col_scale + lower
    intercept = float(coef[-1]) if fit_intercept else 0.0
    coefs = coef[:-1] if fit_intercept else coef
    return tuple(float(max(c, 0.0)) for c in coefs), max(intercept, 0.0)
