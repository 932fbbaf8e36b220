"""The predicted ``iphone12`` device: a per-operator cost model calibrated on published iPhone 12 latencies.

No iPhone is reachable here. Latencies are *predicted*: :func:`latency_lut._features.graph_features`
prices a module's deployed ONNX graph per op class, and a non-negative linear model
(:class:`latency_lut._costmodel.CostModel`) fitted on the published Core ML latencies of
``data/iphone12_published_latency.csv`` turns those features into milliseconds. The fitted model ships
as ``data/iphone12_costmodel.json`` together with its leave-one-family-out (LOFO) validation, which is
the error to quote next to any iphone12 figure.

Calibration data handling (see ``data/README_iphone12.md``):

- only rows whose ``timm_name`` timm can create (``pretrained=False``) are used;
- the resolution is the leading integer of the ``resolution`` column, else 256 for FastViT / MobileCLIP
  FastViT (``fastvit_*``) models and 224 otherwise (each such assumption is recorded);
- every architecture (timm name at one resolution) has the same total weight whatever the number of
  rows that report it; ``[A-]`` and ``[B]`` rows weigh half as much as ``[A]`` rows, and an architecture
  with no ``[A]`` row half as much as one with;
- the fit minimises relative error, so large models (ViT-L/14 at 57.9 ms) do not dominate it.

Model selection: every candidate of :data:`CANDIDATES` has the same three terms (all MACs, priced at
least :data:`MAC_FLOOR_MS`; weight bytes; layout/softmax bytes) plus an intercept, and optionally one
large-tensor traffic term (``spill*``, five thresholds), fitted with a squared or an absolute relative
loss: 12 candidates. The shipped one has the lowest LOFO mean MAPE over all families. Because that choice
looks at the same LOFO error, the error quoted (``provenance["lofo"]``, :func:`calibration_summary`) is
the *nested* LOFO: for each family left out, the candidate is chosen by an inner LOFO on the other
families only. The plain LOFO of the shipped candidate is kept as ``provenance["lofo_unnested"]``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import logging
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from search_space import atomic_write

from ._calibration import (
    CalibrationRow,
    Candidate,
    evaluate,
    family_profiles,
    fit_calibration,
    goal_check,
    leave_one_family_out,
    nested_leave_one_family_out,
    select_candidate,
)
from ._costmodel import (
    CostModel,
    CostModelError,
    clear_cost_model_cache,
    load_cost_model_file,
    summarize_calibration,
)
from ._features import OP_CLASSES, SPILL_THRESHOLDS, graph_features
from ._sources import CostModelSource, predict_module_with, unit_cost_with

__all__ = [
    "CALIBRATED_ON",
    "CANDIDATES",
    "IPHONE12",
    "LAYOUT_FEATURE",
    "MACS_FEATURE",
    "MAC_FLOOR_MS",
    "WEIGHTS_FEATURE",
    "calibrate",
    "calibration_rows",
    "calibration_summary",
    "default_costmodel_path",
    "default_csv_path",
    "family_of",
    "load_cost_model",
    "predict_module_ms",
    "spill_feature",
    "unit_cost_ms",
]

_logger = logging.getLogger(__name__)

_DATA = Path(__file__).resolve().parent / "data"
_CSV_NAME = "iphone12_published_latency.csv"
_JSON_NAME = "iphone12_costmodel.json"
CALIBRATED_ON = "published iPhone 12 Core ML latencies"
_REFIT_HINT = " (run `python scripts/calibrate_iphone12.py` to create it)"

MACS_FEATURE = "+".join(f"{c}.macs" for c in ("conv_dense", "conv_pointwise", "conv_depthwise", "conv_grouped",
                                                "matmul", "matmul_dynamic"))
"""Every multiply-accumulate of a convolution (depthwise included) or matrix product: one price per MAC."""

WEIGHTS_FEATURE = "total.weight_bytes"
"""Parameter traffic (fp16): weights are streamed from memory on every inference."""

LAYOUT_FEATURE = "data_movement.bytes+softmax.bytes"
"""Traffic of layout ops and softmax (reshape/transpose/split/concat..., which dominate attention blocks)."""


def spill_feature(quantity: str) -> str:
    """Large-tensor traffic (``spill128k`` ... ``spill2m``) of every op class but layout ops and softmax."""
    if quantity not in SPILL_THRESHOLDS:
        raise CostModelError(f"unknown spill quantity {quantity!r}; expected one of {sorted(SPILL_THRESHOLDS)}")
    return "+".join(f"{c}.{quantity}" for c in OP_CLASSES if c not in ("data_movement", "softmax"))


MAC_FLOOR_MS = 1e3 / 11e12
"""Lower bound of the price of one MAC (ms): the A14 Neural Engine's published peak of 11 trillion operations
per second, read as 11e12 MACs/s (the most lenient reading; 5.5e12 if an operation is half a MAC). No
layer computes faster than peak, so no fit may price compute below it; without the bound the fit is free to
put all cost on weight bytes, which are nearly collinear with MACs in the calibration set."""


BLOCK_TERMS: tuple[str, ...] = (
    "act_gelu.elems", "act_silu.elems", "act_hardswish.elems", "layernorm.bytes", "batchnorm.bytes",
    "dw3.macs", "dw5.macs", "dw7.macs", "globalpool.ops", "softmax.ops", "data_movement.ops",
)
"""What the space's blocks do beyond MACs and bytes, each priced by the calibration (see
``latency_lut._features.BLOCK_FEATURES``): GELU / SiLU / hard-swish elements, LayerNorm and unfolded BatchNorm
traffic, depthwise MACs by kernel (on top of the per-MAC price), global poolings (squeeze-excite gates),
attention layers (softmax count) and layout ops (MobileViT's unfold/fold, attention's reshapes). Each is
shrunk towards free by a ridge penalty: few calibration families exercise some of them, and a price only
one family supports would be that family's residual, not a block's cost."""

SOURCE_PRIOR = 2.0
"""Pseudo-rows pulling each source's log scale towards 0 (see ``latency_lut._calibration``)."""


def _candidates() -> tuple[Candidate, ...]:
    out = []
    base = (MACS_FEATURE, WEIGHTS_FEATURE, LAYOUT_FEATURE)
    for loss in ("l2", "l1"):
        for spill in (None, "spill512k", "spill1m"):
            for alpha in (16.0, 64.0):
                feats = base + ((spill_feature(spill),) if spill else ()) + BLOCK_TERMS
                options = {"relative": True, "fit_intercept": True, "loss": loss,
                           "min_coefficients": {MACS_FEATURE: MAC_FLOOR_MS},
                           "ridge": dict.fromkeys(BLOCK_TERMS, alpha), "source_prior": SOURCE_PRIOR}
                out.append(Candidate(f"{loss}/{spill or 'no-spill'}/ridge{alpha:g}", feats, options))
    return tuple(out)


CANDIDATES: tuple[Candidate, ...] = _candidates()
"""The model specifications calibration selects from (see the module docstring): intercept + MACs (priced at
least :data:`MAC_FLOOR_MS`) + weight bytes + layout bytes + every :data:`BLOCK_TERMS` term, with no
large-tensor term or one of two thresholds, two ridge strengths (strong: see :data:`BLOCK_TERMS`), and the
squared (``l2``) or absolute (``l1``) relative loss; per-source scales in all of them."""

QUALITY_WEIGHT = {"A": 1.0, "A-": 0.5, "B": 0.5}
"""Relative fit weight of a row by the quality tag that opens its ``notes``."""

_FAMILIES = ("RepViT", "RepNeXt", "FastViT", "MobileOne", "EfficientFormerV2", "EfficientFormer", "MobileNetV2",
             "MobileNetV3", "MobileCLIP", "MobileViTv2", "MobileViT", "MobileViG", "Next-ViT", "EfficientNet",
             "EfficientViT", "SwiftFormer", "PoolFormer", "ConvNeXt", "DeiT", "PiT", "PVTv2", "SHViT", "ResNet")
"""Families for validation, matched as prefixes of the published name (spaces ignored), longest names first
where one is a prefix of another (``EfficientFormerV2`` before ``EfficientFormer``)."""


def default_csv_path() -> Path:
    """The calibration CSV shipped in the package."""
    return _DATA / _CSV_NAME


def default_costmodel_path() -> Path:
    """The fitted cost model JSON shipped in the package."""
    return _DATA / _JSON_NAME


def family_of(model: str, timm_name: str = "") -> str:
    """Family of a published model, from its published name (``"MobileCLIP-S0 ..."`` -> ``"MobileCLIP"``).

    Falls back to the leading letters of the timm name.
    """
    key = model.lower().replace(" ", "")
    for fam in _FAMILIES:
        if key.startswith(fam.lower()):
            return fam
    m = re.match(r"[A-Za-z]+", model) or re.match(r"[A-Za-z]+", timm_name)
    return m.group(0) if m else (timm_name or model)


def source_of(source_text: str) -> str:
    """The source a calibration row's figure comes from: its ``source_repo_or_paper`` cell up to the first ``(``
    or ``:`` (``"RepViT paper: Wang et al., ..."`` -> ``"RepViT paper"``, ``"apple/ml-fastvit (README; ...)"``
    -> ``"apple/ml-fastvit"``). Rows of one source share a fitted scale."""
    return re.split(r"[(:]", source_text or "", maxsplit=1)[0].strip() or "unknown"


def _parse_resolution(text: str, timm_name: str) -> tuple[int, bool]:
    """(resolution, assumed): the leading integer of ``text``, else 256 for ``fastvit_*`` models, else 224."""
    m = re.match(r"\s*(\d+)", text or "")
    if m:
        return int(m.group(1)), not text.strip().isdigit()
    return (256 if timm_name.startswith("fastvit") else 224), True


def _quality(notes: str) -> str:
    m = re.match(r"\s*\[(A-|A|B)\]", notes or "")
    return m.group(1) if m else "B"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cache
def _timm_features(timm_name: str, resolution: int) -> tuple[tuple[str, float], ...]:
    """Features of a timm model (cached for the life of the process only; never written to disk)."""
    import timm

    model = timm.create_model(timm_name, pretrained=False)
    size = model.pretrained_cfg.get("input_size", (3, resolution, resolution))
    if tuple(size[1:]) != (resolution, resolution):
        try:  # models with a fixed token grid (EfficientFormer, ViTs) are built for the published size
            model = timm.create_model(timm_name, pretrained=False, img_size=resolution)
        except TypeError:  # the others take any size as they are
            pass
    feats = graph_features(model, (3, resolution, resolution))
    return tuple(feats.items())


def calibration_rows(
        csv_path: str | Path | None = None,
        *,
        progress: bool = False,
) -> tuple[list[CalibrationRow], list[dict[str, Any]]]:
    """Read the calibration CSV and price every usable model.

    Args:
        csv_path: CSV in the layout of ``data/iphone12_published_latency.csv`` (default: that file).
        progress: Show a tqdm bar over the models being priced.

    Returns:
        ``(rows, skipped)``: usable rows with features and fit weights, and a record of every row left out
        (with the reason) or whose resolution was assumed.

    Raises:
        CostModelError: The CSV cannot be read or lacks a needed column.
    """
    import timm

    path = Path(csv_path) if csv_path is not None else default_csv_path()
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
    except OSError as e:
        raise CostModelError(f"cannot read calibration CSV {path}: {e}") from None
    needed = {"model", "timm_name", "latency_ms", "resolution", "notes", "source_repo_or_paper"}
    if not records or not needed <= set(records[0]):
        raise CostModelError(f"calibration CSV {path} must have the columns {sorted(needed)}")

    notes: list[dict[str, Any]] = []
    usable: list[tuple[dict[str, str], str, int]] = []
    for rec in records:
        name, tn = rec["model"].strip(), (rec["timm_name"] or "").strip()
        if not tn:
            notes.append({"model": name, "status": "skipped", "reason": "no timm_name"})
            continue
        if not timm.is_model(tn):
            notes.append({"model": name, "timm_name": tn, "status": "skipped", "reason": f"timm {timm.__version__} "
                          "has no such model"})
            continue
        try:
            latency = float(rec["latency_ms"])
        except ValueError:
            notes.append({"model": name, "status": "skipped", "reason": f"latency {rec['latency_ms']!r} not a number"})
            continue
        res, assumed = _parse_resolution(rec["resolution"], tn)
        if assumed:
            notes.append({"model": name, "timm_name": tn, "status": "used", "reason": f"resolution "
                          f"{rec['resolution']!r} read as {res}"})
        rec = dict(rec, latency_ms=latency)
        usable.append((rec, tn, res))

    keys = sorted({(tn, res) for _, tn, res in usable})
    feats: dict[tuple[str, int], dict[str, float]] = {}
    bar = _progress(keys, progress)
    for tn, res in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{tn}@{res}")
        try:
            feats[(tn, res)] = dict(_timm_features(tn, res))
        except CostModelError as e:
            _logger.warning("leaving %s@%d out of the calibration: %s", tn, res, e)
            notes.append({"timm_name": tn, "status": "skipped", "reason": str(e)})

    by_arch: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for rec, tn, res in usable:
        if (tn, res) in feats:
            by_arch.setdefault(f"{tn}@{res}", []).append((rec, tn))
    rows: list[CalibrationRow] = []
    for arch, recs in sorted(by_arch.items()):
        qs = [QUALITY_WEIGHT[_quality(r["notes"])] for r, _ in recs]
        arch_weight = max(qs)
        for (rec, tn), q in zip(recs, qs):
            res = int(arch.rsplit("@", 1)[1])
            rows.append(CalibrationRow(
                model=rec["model"].strip(), arch=arch, family=family_of(rec["model"], tn),
                features=feats[(tn, res)], latency_ms=float(rec["latency_ms"]),
                weight=arch_weight * q / sum(qs), quality=_quality(rec["notes"]),
                source=source_of(rec["source_repo_or_paper"]),
            ))
    _logger.info("%d calibration rows over %d architectures and %d families (%d CSV rows left out)",
                 len(rows), len(by_arch), len({r.family for r in rows}),
                 sum(1 for n in notes if n["status"] == "skipped"))
    return rows, notes


def _progress(items: Sequence, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return items
    return tqdm(items, desc="pricing calibration models", unit="model")


def calibrate(
        csv_path: str | Path | None = None,
        out_path: str | Path | None = None,
        *,
        progress: bool = True,
        feature_names: Sequence[str] | None = None,
        fit_options: dict[str, Any] | None = None,
        candidates: Sequence[Candidate] | None = None,
) -> CostModel:
    """Price every usable model of the CSV, select and fit the model, validate it by (nested) LOFO, write the JSON.

    Args:
        csv_path: Calibration CSV (default: the shipped one).
        out_path: Where to write the model (default: the shipped ``data/iphone12_costmodel.json``).
        progress: Show a progress bar over the models.
        feature_names: Fit exactly these features (no selection); with ``fit_options`` (default: relative
            squared error with an intercept).
        fit_options: Keyword arguments of :func:`latency_lut._costmodel.fit` for ``feature_names``.
        candidates: Model specifications to select from (default :data:`CANDIDATES`; ignored when
            ``feature_names`` is given).

    Returns:
        The fitted model, whose ``provenance`` holds the data record, versions, the selection record, the
        nested LOFO table (``"lofo"``, the error to quote) and the LOFO table of the shipped candidate
        (``"lofo_unnested"``).
    """
    import onnx
    import timm
    import torch

    csv_file = Path(csv_path) if csv_path is not None else default_csv_path()
    out = Path(out_path) if out_path is not None else default_costmodel_path()
    if feature_names is not None:
        options = {"relative": True, "fit_intercept": True, "loss": "l2"} if fit_options is None else fit_options
        cands: Sequence[Candidate] = (Candidate("given", tuple(feature_names), dict(options)),)
    else:
        cands = tuple(candidates) if candidates is not None else CANDIDATES
    if not cands:
        raise CostModelError("no candidate models to calibrate")
    rows, notes = calibration_rows(csv_file, progress=progress)
    n_families = len({r.family for r in rows})
    if n_families < 2:
        raise CostModelError(f"{csv_file} has fewer than two usable families; cannot calibrate")
    idx, scores = select_candidate(rows, cands) if len(cands) > 1 else (0, [float("nan")])
    chosen = cands[idx]
    options = dict(chosen.fit_options)
    unnested = leave_one_family_out(rows, feature_names=chosen.feature_names, **options)
    nested = len(cands) > 1 and n_families >= 3
    lofo = nested_leave_one_family_out(rows, cands) if nested else unnested
    final, scales = fit_calibration(rows, chosen.feature_names, **options)
    in_sample = evaluate(final, rows, scales)
    provenance = {
        "device": "iphone12",
        "description": "Apple iPhone 12 / 12 Pro / 12 Pro Max (A14 Bionic), Core ML; PREDICTED, not measured",
        "method": "non-negative least squares on per-op-class and block features of the re-parameterized ONNX "
                  "graph, elementwise chains fused into their producing layer (latency_lut._features), fitted "
                  "jointly with one multiplicative scale per source (latency_lut._calibration)",
        "csv": {"file": csv_file.name, "sha256": _sha256(csv_file)},
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "versions": {"timm": timm.__version__, "torch": torch.__version__, "onnx": onnx.__version__},
        "fit_options": options,
        "model_selection": {
            "rule": "among the candidates, the one with the lowest leave-one-family-out mean MAPE (all-rows "
                    "scoring) over the families available, first on ties; the same rule runs inside every fold "
                    "of the nested LOFO. The candidate grid itself was designed after exploratory LOFO runs on "
                    "the same data (see data/README_iphone12.md)" if len(cands) > 1 else
                    "none: the features were given",
            "chosen": chosen.name,
            "candidates": [dict(c.to_dict(), lofo_mean_mape_pct=sc) for c, sc in zip(cands, scores)]
            if len(cands) > 1 else [chosen.to_dict()],
        },
        "scoring": "every architecture of a family weighs the same; an architecture with several published rows "
                   "is scored against all of them. Errors are against the published rows corrected by their "
                   "source's scale from the same fit (source-adjusted; consensus_* figures: scale 1). A family's "
                   "median_ape_pct and bias_pct are medians over its architectures; mape_pct the mean; Spearman "
                   "is over architectures (overall_spearman pools every family of the LOFO).",
        "row_weighting": {"quality_weight": QUALITY_WEIGHT,
                          "rule": "each architecture (timm name @ resolution) totals the best quality weight of "
                                  "its rows, shared among its rows in proportion to their quality weights"},
        "bytes_per_element": 2,
        "rows_used": [
            {"model": r.model, "arch": r.arch, "family": r.family, "source": r.source, "latency_ms": r.latency_ms,
             "quality": r.quality, "weight": round(r.weight, 6)} for r in rows
        ],
        "source_scales": {k: round(v, 4) for k, v in sorted(scales.items())},
        "block_effects": _block_effects(final, rows, chosen, unnested["mean_mape_pct"]),
        "error_by_block": _error_by_block(lofo, rows),
        "family_profiles": family_profiles(rows),
        "csv_notes": notes,
        "in_sample": {k: in_sample[k] for k in ("mape_pct", "mape_best_quality_pct", "spearman", "n_rows",
                                                "n_models")},
        "lofo_kind": "nested" if nested else "plain",
        "lofo": lofo,
        "goals": goal_check(lofo),
        "lofo_unnested": unnested,
    }
    model = CostModel(final.feature_names, final.coefficients, final.intercept_ms, provenance)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, model.to_json() + "\n")
    clear_cost_model_cache()
    _logger.info("wrote %s: model %s; %s LOFO mean MAPE %.1f%% (shipped candidate, un-nested: %.1f%%) over %d "
                 "families; in-sample MAPE %.1f%%", out, chosen.name, "nested" if nested else "plain",
                 lofo["mean_mape_pct"], unnested["mean_mape_pct"], len(lofo["families"]), in_sample["mape_pct"])
    return model


def _block_effects(model: CostModel, rows: Sequence[CalibrationRow], chosen: Candidate,
                   lofo_mean_mape_pct: float) -> dict[str, dict[str, Any]]:
    """What the calibration measured for each block term: its price, the share of predicted time it takes in
    the models that have it, the families that exercise it (a term only one family has is not identifiable:
    its price is that family's residual) and the LOFO error of the chosen specification without it."""
    archs = {r.arch: r.features for r in rows}
    family = {r.arch: r.family for r in rows}
    out = {}
    for name, coef in zip(model.feature_names, model.coefficients):
        if name not in BLOCK_TERMS:
            continue
        shares = [model.contributions(f)[name] / model.predict(f) for f in archs.values() if f.get(name, 0.0) > 0]
        without = tuple(n for n in chosen.feature_names if n != name)
        opts = dict(chosen.fit_options, ridge={k: v for k, v in chosen.fit_options.get("ridge", {}).items()
                                               if k != name})
        lofo_without = leave_one_family_out(rows, feature_names=without, **opts)["mean_mape_pct"]
        families = sorted({family[a] for a, f in archs.items() if f.get(name, 0.0) > 0})
        out[name] = {"coefficient": coef, "models_with_it": len(shares), "families_with_it": families,
                     "identifiable": len(families) >= 2,
                     "median_share_pct": 100.0 * float(sorted(shares)[len(shares) // 2]) if shares else 0.0,
                     "max_share_pct": 100.0 * max(shares, default=0.0),
                     "lofo_mean_mape_pct_without": lofo_without,
                     "lofo_mean_mape_pct_with": lofo_mean_mape_pct}
    return out


def _error_by_block(lofo: dict[str, Any], rows: Sequence[CalibrationRow]) -> dict[str, dict[str, Any]]:
    """The validation error by block type: per block term, the LOFO errors of the architectures that have it."""
    feats = {r.arch: r.features for r in rows}
    errs = {a: m for f in lofo["families"] for a, m in f["models"].items()}
    out = {}
    for term in BLOCK_TERMS:
        have = [m for a, m in errs.items() if feats[a].get(term, 0.0) > 0]
        out[term] = {"n_models": len(have),
                     "median_ape_pct": float(np.median([m["ape_pct"] for m in have])) if have else None,
                     "bias_pct": float(np.median([m["err_pct"] for m in have])) if have else None}
    return out


def load_cost_model(path: str | Path | None = None) -> CostModel:
    """The shipped iphone12 cost model (or the one at ``path``)."""
    return load_cost_model_file(Path(path) if path is not None else default_costmodel_path(),
                                what="iphone12 cost model", hint=_REFIT_HINT)


def predict_module_ms(
        module: nn.Module,
        input_size: Sequence[int] = (3, 224, 224),
        *,
        cost_model: CostModel | None = None,
) -> float:
    """PREDICTED iPhone 12 Core ML latency (ms, batch 1) of ``module``'s deployed form.

    Raises:
        CostModelError: The module cannot be priced.
    """
    return predict_module_with(cost_model if cost_model is not None else load_cost_model(), module, input_size)


def unit_cost_ms(module: nn.Module, input_size: Sequence[int], cost_model: CostModel | None = None) -> float:
    """PREDICTED iPhone 12 cost (ms) of one LUT unit: the model's per-op terms without its fixed intercept.

    A network's prediction is the sum of its units plus the intercept once (see ``latency_lut._lut``), which
    equals :func:`predict_module_ms` of the whole network up to graph-boundary effects.
    """
    return unit_cost_with(cost_model if cost_model is not None else load_cost_model(), module, input_size)


def calibration_summary(path: str | Path | None = None) -> dict[str, Any]:
    """What to show next to an iphone12 figure: the LOFO table and overall figures from the shipped JSON.

    The LOFO figures are the nested ones where the model was selected among candidates (see the module
    docstring); ``lofo_unnested_mean_mape_pct`` is the plain LOFO of the shipped candidate. The keys are
    those of :func:`latency_lut._costmodel.summarize_calibration`.
    """
    return summarize_calibration(load_cost_model(path), device="iphone12", calibrated_on=CALIBRATED_ON)


IPHONE12 = CostModelSource(
    "iphone12", "costmodel-iphone12",
    "Apple iPhone 12 (A14, Core ML): PREDICTED by a per-operator cost model calibrated on published latencies; "
    "no iPhone is measured",
    model_path=default_costmodel_path(), calibrated_on=CALIBRATED_ON, refit_hint=_REFIT_HINT)
"""The predicted ``iphone12`` device: the shipped cost model JSON, priced through :class:`CostModelSource`."""
