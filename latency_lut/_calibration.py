"""Calibrating a :class:`~latency_lut._costmodel.CostModel` on published latencies, and saying how far to trust it.

Published figures for one device come from many papers, and papers disagree: the same network is reported
up to twice as slow in one paper as in another (other OS version, compute units, export path). A fit that
took every row at face value would bend its prices to explain those offsets. So every row belongs to a
*source* (the paper or repository it was read from), and the fit is

    published_ms(row) = scale[source(row)] * (intercept + sum_j coef_j * feature_j(row))

with one multiplicative scale per source, fitted jointly with the coefficients by alternation: with the
scales fixed, the coefficients are a non-negative relative least-squares fit to ``published / scale``;
with the coefficients fixed, each source's log scale is the weighted mean log ratio of its rows to the
predictions, shrunk towards 0 by a prior worth ``source_prior`` rows (a source with one or two rows barely
moves). The log scales are then centred on the rows of the best quality tag present (their row-weighted
mean log scale is 0), so a prediction (scale 1) is on the average scale of the best-documented rows. A
source's scale is only learned from the networks it shares with other sources' families; in validation, a
left-out row whose source has no other rows is scored at scale 1.

Validation is leave-one-family-out (LOFO): fit without a family, predict it. A family's figures are the
median over its architectures of the absolute percentage error (``median_ape_pct``) and the median signed
error (``bias_pct``), both against the published rows corrected by their source's scale from the same fold
(``source-adjusted``); the same figures at scale 1 (``consensus_*``) show what the offsets between papers
add. Model selection (choosing features and loss among :class:`Candidate` s by LOFO error) is repeated
inside every fold of the nested LOFO, which is the error to quote.

:func:`family_profiles` and :func:`resemblance` tell which calibration family a new network resembles (by
the share of its predicted time each term of the model takes), so its figure can carry that family's error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._costmodel import CostModel, CostModelError, feature_matrix, fit_matrix

__all__ = [
    "GOALS",
    "CalibrationRow",
    "Candidate",
    "evaluate",
    "family_profiles",
    "fit_calibration",
    "goal_check",
    "leave_one_family_out",
    "nested_leave_one_family_out",
    "resemblance",
    "select_candidate",
]

GOALS: dict[str, float] = {"median_ape_pct": 15.0, "abs_bias_pct": 15.0, "spearman": 0.9, "min_models": 3}
"""What the calibration aims for, in nested LOFO: every family with at least ``min_models`` architectures
within ``median_ape_pct`` median error and ``abs_bias_pct`` median signed error, Spearman over all
architectures at least ``spearman``."""

_QUALITY_RANK = {"A": 0, "A-": 1, "B": 2}


@dataclass(frozen=True)
class CalibrationRow:
    """One published latency with the features of its model.

    Attributes:
        model: Model name as published.
        arch: Key of the architecture (rows of one architecture share features), e.g. the timm name.
        family: Family used for leave-one-family-out validation.
        features: Output of :func:`latency_lut._features.graph_features`.
        latency_ms: Published latency.
        weight: Fit weight of this row.
        quality: Quality tag of the source (``"A"``, ``"A-"``, ``"B"``).
        source: The paper or repository the figure was read from (rows of one source share a scale).
    """

    model: str
    arch: str
    family: str
    features: Mapping[str, float]
    latency_ms: float
    weight: float = 1.0
    quality: str = ""
    source: str = ""


@dataclass(frozen=True)
class Candidate:
    """One model specification that model selection may choose: features and fit options.

    Attributes:
        name: Short label.
        feature_names: Passed to :func:`~latency_lut._costmodel.fit`.
        fit_options: Keyword arguments of :func:`fit_calibration` (``source_prior``) and of
            :func:`~latency_lut._costmodel.fit` (``loss``, ``ridge``, ...).
    """

    name: str
    feature_names: tuple[str, ...]
    fit_options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "feature_names": list(self.feature_names), "fit_options": dict(self.fit_options)}


class _Design:
    """The rows of a calibration as arrays, with one feature matrix per feature list (built once)."""

    def __init__(self, rows: Sequence[CalibrationRow]) -> None:
        self.rows = list(rows)
        self.y = np.array([r.latency_ms for r in self.rows], dtype=float)
        self.w = np.array([r.weight for r in self.rows], dtype=float)
        self.sources = [r.source for r in self.rows]
        self.families = [r.family for r in self.rows]
        self._x: dict[tuple[str, ...], np.ndarray] = {}

    def x(self, names: Sequence[str]) -> np.ndarray:
        key = tuple(names)
        if key not in self._x:
            self._x[key] = feature_matrix([r.features for r in self.rows], key)
        return self._x[key]


def _solve(design: _Design, idx: np.ndarray, names: Sequence[str], options: Mapping[str, Any],
           ) -> tuple[tuple[float, ...], float, dict[str, float]]:
    """Joint fit of coefficients and source scales on the rows ``idx``: ``(coefs, intercept, scales)``."""
    opts = dict(options)
    prior = opts.pop("source_prior", None)
    iterations = int(opts.pop("scale_iterations", 10))
    x, y, w = design.x(names)[idx], design.y[idx], design.w[idx]
    src = [design.sources[i] for i in idx]
    anchor = _anchor([design.rows[i].quality for i in idx])
    log_s = dict.fromkeys(src, 0.0)
    for _ in range(iterations if prior is not None else 1):
        s = np.array([math.exp(log_s[k]) for k in src])
        coefs, intercept = fit_matrix(x, y / s, names, weights=w, **opts)
        if prior is None:
            break
        pred = x @ np.asarray(coefs) + intercept
        num: dict[str, float] = dict.fromkeys(log_s, 0.0)
        den: dict[str, float] = dict.fromkeys(log_s, float(prior) * float(np.mean(w)))
        for k, wi, yi, pi in zip(src, w, y, pred):
            num[k] += wi * math.log(yi / max(pi, 1e-12))
            den[k] += wi
        raw = {k: num[k] / den[k] for k in log_s}
        centre = sum(wi * raw[k] for k, wi, a in zip(src, w, anchor) if a) / float(np.sum(w[anchor]))
        log_s = {k: v - centre for k, v in raw.items()}
    return coefs, intercept, {k: math.exp(v) for k, v in log_s.items()}


def _anchor(qualities: Sequence[str]) -> np.ndarray:
    """The rows whose sources set the scale of predictions: those of the best quality tag present."""
    ranks = [_QUALITY_RANK.get(q, 3) for q in qualities]
    best = min(ranks)
    return np.array([r == best for r in ranks])


def fit_calibration(
        rows: Sequence[CalibrationRow],
        feature_names: Sequence[str],
        *,
        provenance: Mapping[str, Any] | None = None,
        **fit_options: Any,
) -> tuple[CostModel, dict[str, float]]:
    """Fit a cost model on calibration rows, with per-source scales when ``source_prior`` is given.

    Args:
        rows: Calibration rows (their weights are fit weights).
        feature_names: Features of the model.
        provenance: Stored on the model.
        **fit_options: ``source_prior`` (pseudo-rows pulling each source's log scale to 0; ``None`` or absent:
            no scales, every row taken at face value), ``scale_iterations`` (alternations, default 10) and
            the keyword arguments of :func:`~latency_lut._costmodel.fit`.

    Returns:
        ``(model, scales)``: the model (which predicts at scale 1) and each source's fitted scale.
    """
    design = _Design(rows)
    if not design.rows:
        raise CostModelError("no calibration rows to fit")
    coefs, intercept, scales = _solve(design, np.arange(len(design.rows)), feature_names, fit_options)
    return CostModel(tuple(feature_names), coefs, intercept, dict(provenance or {})), scales


def _arch_table(rows: Sequence[CalibrationRow], preds: Sequence[float], scales: Mapping[str, float],
                ) -> dict[str, dict[str, Any]]:
    """Per architecture: its prediction, and per published row the source scale and the errors."""
    acc: dict[str, dict[str, Any]] = {}
    for r, p in zip(rows, preds):
        a = acc.setdefault(r.arch, {"predicted_ms": float(p), "rows": []})
        s = float(scales.get(r.source, 1.0))
        a["rows"].append({"published_ms": r.latency_ms, "quality": r.quality, "source": r.source,
                          "source_scale": s, "err_pct": 100.0 * (p * s - r.latency_ms) / r.latency_ms,
                          "consensus_err_pct": 100.0 * (p - r.latency_ms) / r.latency_ms})
    for a in acc.values():
        rs = a["rows"]
        best = min(_QUALITY_RANK.get(x["quality"], 3) for x in rs)
        top = [x for x in rs if _QUALITY_RANK.get(x["quality"], 3) == best]
        a["published_ms"] = float(np.mean([x["published_ms"] for x in rs]))
        a["normalized_ms"] = float(np.mean([x["published_ms"] / x["source_scale"] for x in rs]))
        a["err_pct"] = float(np.mean([x["err_pct"] for x in rs]))
        a["ape_pct"] = float(np.mean([abs(x["err_pct"]) for x in rs]))
        a["ape_best_quality_pct"] = float(np.mean([abs(x["err_pct"]) for x in top]))
        a["consensus_err_pct"] = float(np.mean([x["consensus_err_pct"] for x in rs]))
        a["consensus_ape_pct"] = float(np.mean([abs(x["consensus_err_pct"]) for x in rs]))
    return acc


def _spearman(archs: Mapping[str, Mapping[str, Any]]) -> float:
    from scipy.stats import spearmanr

    if len(archs) < 3:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant predictions: NaN, which is the answer
        return float(spearmanr([a["normalized_ms"] for a in archs.values()],
                               [a["predicted_ms"] for a in archs.values()]).statistic)


def _scores(archs: Mapping[str, Mapping[str, Any]], n_rows: int) -> dict[str, Any]:
    def agg(fn, key):
        return float(fn([a[key] for a in archs.values()])) if archs else float("nan")

    return {
        "mape_pct": agg(np.mean, "ape_pct"),
        "median_ape_pct": agg(np.median, "ape_pct"),
        "bias_pct": agg(np.median, "err_pct"),
        "mape_best_quality_pct": agg(np.mean, "ape_best_quality_pct"),
        "consensus_median_ape_pct": agg(np.median, "consensus_ape_pct"),
        "consensus_bias_pct": agg(np.median, "consensus_err_pct"),
        "spearman": _spearman(archs),
        "n_rows": n_rows,
        "n_models": len(archs),
        "models": dict(sorted(archs.items())),
    }


def evaluate(model: CostModel, rows: Sequence[CalibrationRow],
             scales: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Errors of ``model`` on ``rows``, every architecture weighted equally.

    Args:
        model: The fitted model.
        rows: Rows to score.
        scales: Source scales to correct the published rows by (sources not named: scale 1).

    Returns:
        ``mape_pct`` (mean absolute % error), ``median_ape_pct``, ``bias_pct`` (median signed % error; > 0:
        predicted too slow), ``mape_best_quality_pct`` (only each architecture's rows of its best quality tag),
        the ``consensus_`` figures at scale 1, ``spearman`` (over architectures, NaN under 3), ``n_rows``,
        ``n_models`` and the per-architecture table ``models``.
    """
    preds = [model.predict(r.features) for r in rows]
    return _scores(_arch_table(rows, preds, scales or {}), len(rows))


def _summarise(table: list[dict[str, Any]]) -> dict[str, Any]:
    mapes = [t["mape_pct"] for t in table]
    rhos = [t["spearman"] for t in table if math.isfinite(t["spearman"])]
    pooled = {f"{t['family']}/{a}": m for t in table for a, m in t["models"].items()}
    return {
        "families": table,
        "mean_mape_pct": float(np.mean(mapes)),
        "median_mape_pct": float(np.median(mapes)),
        "max_mape_pct": float(np.max(mapes)),
        "mean_spearman": float(np.mean(rhos)) if rhos else float("nan"),
        "mean_mape_best_quality_pct": float(np.mean([t["mape_best_quality_pct"] for t in table])),
        "overall_median_ape_pct": float(np.median([m["ape_pct"] for m in pooled.values()])),
        "overall_spearman": _spearman(pooled),
    }


def _families(design: _Design) -> list[str]:
    families = sorted(set(design.families))
    if len(families) < 2:
        raise CostModelError("leave-one-family-out needs at least two families")
    return families


def _fold(design: _Design, family: str, c: Candidate, train: np.ndarray | None = None) -> dict[str, Any]:
    """Fit ``c`` on the rows outside ``family`` (or on ``train``) and score it on ``family``."""
    fam = np.array(design.families)
    train = np.flatnonzero(fam != family) if train is None else train
    test = np.flatnonzero(fam == family)
    coefs, intercept, scales = _solve(design, train, c.feature_names, c.fit_options)
    preds = design.x(c.feature_names)[test] @ np.asarray(coefs) + intercept
    return {"family": family, **_scores(_arch_table([design.rows[i] for i in test], preds, scales), len(test))}


def _lofo(design: _Design, c: Candidate, families: Sequence[str] | None = None) -> dict[str, Any]:
    return _summarise([_fold(design, f, c) for f in (families or _families(design))])


def leave_one_family_out(
        rows: Sequence[CalibrationRow],
        *,
        feature_names: Sequence[str],
        **fit_options: Any,
) -> dict[str, Any]:
    """Fit without each family in turn and score the fit on that family (see :func:`evaluate`).

    Returns:
        ``{"families": [{"family", <evaluate's figures>}, ...], "mean_mape_pct", "median_mape_pct",
        "max_mape_pct", "mean_spearman", "mean_mape_best_quality_pct", "overall_median_ape_pct",
        "overall_spearman"}``; family entries sorted by name; the overall figures pool every family's
        architectures.
    """
    return _lofo(_Design(rows), Candidate("given", tuple(feature_names), fit_options))


def _select(design: _Design, candidates: Sequence[Candidate], families: Sequence[str]) -> tuple[int, list[float]]:
    scores = [_lofo(design, c, families)["mean_mape_pct"] for c in candidates]
    return int(np.argmin(scores)), scores


def select_candidate(rows: Sequence[CalibrationRow], candidates: Sequence[Candidate]) -> tuple[int, list[float]]:
    """The candidate with the lowest leave-one-family-out mean MAPE on ``rows`` (first one on ties).

    Returns:
        ``(index of the chosen candidate, LOFO mean MAPE of every candidate)``.
    """
    if not candidates:
        raise CostModelError("no candidate models to select from")
    design = _Design(rows)
    return _select(design, candidates, _families(design))


def nested_leave_one_family_out(rows: Sequence[CalibrationRow], candidates: Sequence[Candidate]) -> dict[str, Any]:
    """Leave-one-family-out error of the whole procedure "select a candidate by LOFO, then fit it".

    For each family in turn, the candidate is chosen by LOFO on the other families only (an inner LOFO that
    never sees the left-out family), fitted on them and scored on the left-out family. This is the honest
    error of a model whose features were selected on the same data.

    Returns:
        As :func:`leave_one_family_out`, each family entry with ``"chosen"`` (the candidate the inner
        selection picked); needs at least three families.
    """
    design = _Design(rows)
    families = _families(design)
    if len(families) < 3:
        raise CostModelError("nested leave-one-family-out needs at least three families")
    table = []
    for fam in families:
        inner = [f for f in families if f != fam]
        sub = _Design([r for r in design.rows if r.family != fam])
        idx, _ = _select(sub, candidates, inner)
        table.append({**_fold(design, fam, candidates[idx]), "chosen": candidates[idx].name})
    return _summarise(table)


def goal_check(lofo: Mapping[str, Any]) -> dict[str, Any]:
    """Which :data:`GOALS` a (nested) LOFO table meets: per family and overall.

    Returns:
        ``{"families": {family: {"median_ape_pct", "bias_pct", "n_models", "meets": bool | None}}, "spearman",
        "spearman_meets", "all_met"}``; ``meets`` is ``None`` for a family below ``min_models``.
    """
    fams = {}
    for f in lofo["families"]:
        judged = f["n_models"] >= GOALS["min_models"]
        ok = f["median_ape_pct"] <= GOALS["median_ape_pct"] and abs(f["bias_pct"]) <= GOALS["abs_bias_pct"]
        fams[f["family"]] = {"median_ape_pct": f["median_ape_pct"], "bias_pct": f["bias_pct"],
                             "n_models": f["n_models"], "meets": bool(ok) if judged else None}
    rho = lofo["overall_spearman"]
    rho_ok = bool(math.isfinite(rho) and rho >= GOALS["spearman"])
    return {"families": fams, "spearman": rho, "spearman_meets": rho_ok,
            "all_met": rho_ok and all(v["meets"] is not False for v in fams.values())}


COMPOSITION: tuple[tuple[str, str], ...] = (
    *((f"{c}.macs", "total.macs") for c in ("conv_dense", "conv_pointwise", "conv_grouped", "matmul",
                                            "matmul_dynamic", "dw3", "dw5", "dw7")),
    *((f"act_{k}.elems", "total.bytes") for k in ("gelu", "silu", "hardswish")),
    ("layernorm.bytes", "total.bytes"), ("batchnorm.bytes", "total.bytes"), ("pool.bytes", "total.bytes"),
    ("globalpool.ops", "total.ops"), ("softmax.ops", "total.ops"), ("data_movement.ops", "total.ops"),
)
"""A network's block mix, as (part, whole) feature ratios: where its MACs are (dense, pointwise, grouped,
linear, attention, depthwise by kernel), how much of its traffic passes GELU / SiLU / hard-swish, LayerNorm,
BatchNorm and pooling, and how many of its layers are global poolings, softmaxes and layout ops."""


def composition(features: Mapping[str, float]) -> np.ndarray:
    """The :data:`COMPOSITION` ratios of one feature dict (0 where the whole is 0)."""
    out = []
    for part, whole in COMPOSITION:
        w = float(features.get(whole, 0.0))
        out.append(float(features.get(part, 0.0)) / w if w > 0 else 0.0)
    return np.array(out)


def family_profiles(rows: Sequence[CalibrationRow]) -> dict[str, Any]:
    """Per family: its mean block mix and radius (the farthest member's distance), with the scale of each ratio.

    Distances are mean absolute differences of the :func:`composition` ratios, each divided by its largest
    value over the calibration networks (so every ratio spans 0..1).
    """
    by_arch: dict[str, tuple[str, np.ndarray]] = {}
    for r in rows:
        by_arch.setdefault(r.arch, (r.family, composition(r.features)))
    allc = np.array([c for _, c in by_arch.values()])
    scale = allc.max(axis=0)
    scale[scale <= 0] = 1.0
    families: dict[str, Any] = {}
    for fam in sorted({f for f, _ in by_arch.values()}):
        members = np.array([c for f, c in by_arch.values() if f == fam]) / scale
        centre = members.mean(axis=0)
        families[fam] = {"centre": [float(v) for v in centre], "n_models": int(len(members)),
                         "radius": float(np.max(np.abs(members - centre).mean(axis=1)))}
    return {"ratios": [f"{p}/{w}" for p, w in COMPOSITION], "scale": [float(v) for v in scale],
            "families": families}


def resemblance(features: Mapping[str, float], profiles: Mapping[str, Any], *, margin: float = 0.05,
                ) -> tuple[str | None, float]:
    """The calibration family whose block mix is nearest to ``features``' (see :func:`family_profiles`).

    Returns:
        ``(family, distance)``; ``family`` is ``None`` when the nearest family is farther than its radius plus
        ``margin`` (the network resembles no calibration family) or there are no profiles.
    """
    fams = profiles.get("families") or {}
    if not fams or profiles.get("ratios") != [f"{p}/{w}" for p, w in COMPOSITION]:
        return None, float("inf")
    x = composition(features) / np.asarray(profiles["scale"])
    dists = {f: float(np.abs(x - np.asarray(p["centre"])).mean()) for f, p in fams.items()}
    best = min(dists, key=dists.get)
    if dists[best] > float(fams[best]["radius"]) + margin:
        return None, dists[best]
    return best, dists[best]
