"""Exporting a trial as a timm model folder: config.json, model.safetensors, a verified model.onnx, a card.

The folder follows timm's Hugging Face hub layout (written with ``timm.models.save_for_hf``), so
``search_space.register_dir(DIR)`` followed by ``timm.create_model('repnas_<name>', pretrained=True)``, or
``search_space.create_model_from_dir(DIR)``, rebuilds the genome with the trial's proxy weights.

Everything is written into a temporary sibling folder first and moved into place only after the ONNX
check passed, so a failed export leaves an existing folder as it was.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space import check_int

from ._config import Scoring
from ._errors import ExportError
from ._record import StudyData, StudyKeys, TrialRecord
from ._storage import load_existing_study, open_storage, redact_url, resolve_storage_url

__all__ = ["ONNX_ATOL", "ONNX_RTOL", "ExportResult", "default_name", "export_pareto", "export_trial"]

_logger = logging.getLogger(__name__)

ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-5
"""The export-time check: ``max|ort - torch| <= ONNX_ATOL + ONNX_RTOL * max|torch|`` on random input.

For logits up to 10 in magnitude this is within 2e-4 (an absolute 1e-4 for well-scaled outputs). Proxy weights
trained at 32 px give logits in the thousands on 224 px noise; there the float32 rounding that builds up
through a network (measured: 3e-7 to 6e-7 of the largest logit between onnxruntime and torch, and as much
between torch's own training and deployed forms) exceeds 1e-4, so the bound grows with the output, still about
20x above that rounding."""


@dataclass(frozen=True)
class ExportResult:
    """What one export wrote and measured."""

    out_dir: Path
    architecture: str
    trial: int
    files: list[str]
    has_weights: bool
    onnx_max_abs_diff: float
    ort_cpu_measured_ms: float
    ort_cpu_lut_ms: float | None
    search_latency_ms: float
    search_device: str
    score: float
    """The study's first objective (the proxy accuracy, minus the validation loss, or a zero-cost score)."""
    accuracy: float | None = None
    """Mean proxy validation accuracy over the seeds (None for a zero-cost score)."""
    extra: dict[str, Any] = field(default_factory=dict)


# -- reading the study ------------------------------------------------------------------------------------
def _get_trial(study, number: int):
    import optuna

    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        span = f"0..{max(t.number for t in trials)}" if trials else "none yet"
        raise ExportError(f"study {study.study_name!r} has no trial {number} (trials: {span})")
    t = match[0]
    S = optuna.trial.TrialState
    if t.state != S.COMPLETE or not t.values:
        rec = TrialRecord.from_trial(t)
        why = rec.fail_reason or rec.rejected
        hint = {S.RUNNING: "it is still running; wait for it to finish",
                S.WAITING: "it is queued and has not run yet",
                S.PRUNED: ("it was rejected before training (over the latency budget)" if rec.rejected
                           else "it was pruned"),
                S.FAIL: "it failed"}.get(t.state, "")
        raise ExportError(f"trial {number} of study {study.study_name!r} is {t.state.name}"
                          + (f" ({why})" if why else "") + (f": {hint}" if hint else "")
                          + "; only COMPLETE trials can be exported")
    if TrialRecord.from_trial(t).genome is None:
        raise ExportError(f"trial {number} of study {study.study_name!r} has no genome (not a RepNAS study?)")
    return t


def best_evaluation(study, t, storage):
    """Candidate ``t``'s (a rung-0 trial) evaluation at the highest rung it reached: a COMPLETE trial of the
    ``<study>:rungs`` companion, or ``t`` itself."""
    import optuna

    from ._config import RUNGS_SUFFIX

    try:
        rungs = optuna.load_study(study_name=study.study_name + RUNGS_SUFFIX,
                                  storage=open_storage(storage, heartbeat_interval=None))
    except KeyError:  # a study of an earlier version: one fidelity
        return t
    best = t
    for e in rungs.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        rec = TrialRecord.from_trial(e)
        if e.values and rec.candidate == t.number and rec.rung_or_zero > TrialRecord.from_trial(best).rung_or_zero:
            best = e
    return best


def default_name(study_name: str, number: int) -> str:
    """``<study>_trial<N>`` as a timm-friendly name (lower-case, ``_`` for anything else)."""
    base = "".join(ch if ch.isalnum() else "_" for ch in study_name.lower()).strip("_") or "study"
    if not base[0].isalpha():
        base = "m" + base
    while "__" in base:
        base = base.replace("__", "_")
    return f"{base}_trial{number}"


def _data_info(study) -> StudyData:
    """Dataset facts of the proxy (recorded by ``nas.search``; older studies: from the dataset itself)."""
    info = StudyData.of(study)
    if info is not None:
        return info
    ident = study.user_attrs.get(StudyKeys.CONFIG) or {}
    name = ident.get("dataset")
    if not name:
        raise ExportError(f"study {study.study_name!r} records no dataset (not a RepNAS study?)")
    from ._data import load_dataset

    return StudyData.from_attrs(load_dataset(name).describe())


# -- the folder -------------------------------------------------------------------------------------------
def _is_export(folder: Path) -> bool:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and str(cfg.get("architecture", "")).startswith("repnas_") and "repnas" in cfg


def _check_out(out: Path, force: bool, *, parent_made_later: bool = False, holds_exports: bool = False) -> None:
    """Refuse an ``out`` that cannot be written: a file, a non-empty folder without ``force``, a missing parent.

    With ``force`` a non-empty ``out`` must be an earlier export, or (``holds_exports``, the parent folder of
    ``--pareto``) a folder whose export subfolders are checked one by one.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a folder; nothing was written")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            what = "the exports in it" if holds_exports else "it"
            raise ExportError(f"--out {out} exists and is not empty; pass --force to replace {what} (nothing was "
                              "written)")
        # never delete a run folder, a storage or anything else --force was not meant for
        if not holds_exports and not _is_export(out):
            raise ExportError(f"--out {out} holds files that are not an earlier export (no RepNAS config.json); "
                              "--force only replaces export folders: pick another --out (nothing was written)")
    if not out.parent.exists() and not parent_made_later:
        raise ExportError(f"the parent folder of --out {out} does not exist")


def _remove_stale_temporaries(out: Path) -> None:
    """Delete ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` folders that a killed export of ``out`` left behind."""
    import re

    if not out.parent.is_dir():
        return
    pattern = re.compile(re.escape(f".{out.name}.") + r"(?:tmp|old)-(\d+)")
    for p in out.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_dir() and not _pid_alive(int(m.group(1))):
            _logger.info("removing %s, left behind by an interrupted export", p)
            shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers from an earlier attempt in this process are stale too
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _load_weights(path_text: str | None, model) -> tuple[bool, str]:
    """Load a trial's proxy weights into ``model``; (loaded, note for the card)."""
    if not path_text:
        return False, "none: the trial kept no weights (zero-cost proxy, or it was off the front when it finished)"
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ExportError(f"the trial's weights {path} are missing (deleted, or kept on the machine of the worker "
                          "that ran it); copy them there, or pass --no-weights to export the architecture alone")
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise ExportError(f"cannot read the trial's weights {path}: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ExportError(f"the weights {path} do not fit the trial's genome ({first})") from None
    return True, f"the trial's proxy-trained weights ({path.name})"


def _check_onnx(model, deployed, path: Path, res: int) -> dict[str, float]:
    import numpy as np
    import onnx
    import torch

    from search_space import onnx_forward

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported ONNX file is invalid: {str(e).strip().splitlines()[0]}") from None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, res, res, generator=g)
    with torch.inference_mode():
        ref = model.eval()(x).numpy()
        dep = deployed(x).numpy()
    got = np.concatenate([onnx_forward(str(path), x[i:i + 1]) for i in range(x.shape[0])])
    peak = float(np.abs(ref).max())
    diff = {"onnx_vs_torch": float(np.abs(got - ref).max()), "onnx_vs_deployed_torch": float(np.abs(got - dep).max()),
            "output_abs_max": peak, "tolerance": ONNX_ATOL + ONNX_RTOL * peak}
    if not diff["onnx_vs_torch"] <= diff["tolerance"]:  # NaN fails too
        raise ExportError(f"ONNX check failed: onnxruntime and torch differ by {diff['onnx_vs_torch']:.3g} on random "
                          f"input (allowed {diff['tolerance']:.3g} = {ONNX_ATOL:g} + {ONNX_RTOL:g} x max|output| "
                          f"{peak:.3g}); nothing was written")
    return diff


def _coreml(deployed, path: Path, res: int) -> str:
    import logging as _logging
    import warnings

    import coremltools as ct
    import torch

    _logging.getLogger("coremltools").setLevel(_logging.ERROR)
    x = torch.randn(1, 3, res, res)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.export.export(deployed, (x,)).run_decompositions({})
            ml = ct.convert(prog, inputs=[ct.TensorType(name="input", shape=tuple(x.shape))],
                            convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15)
        ml.save(str(path))
    except Exception as e:  # noqa: BLE001 - a converter failure is one message, the folder stays as it was
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"Core ML conversion failed ({type(e).__name__}: {first}); nothing was written") from None
    how = f"converted with coremltools {ct.__version__} (ML program, float16 compute, iOS 15+)"
    if sys.platform != "darwin":
        return how + "; not run here (Core ML runs only on macOS/iOS)"
    import numpy as np  # Core ML runs here: check it against torch, at float16 precision

    out = np.asarray(next(iter(ml.predict({"input": x.numpy()}).values())))
    with torch.inference_mode():
        ref = deployed(x).numpy()
    diff, allowed = float(np.abs(out - ref).max()), 1e-2 * max(1.0, float(np.abs(ref).max()))
    if not diff <= allowed:
        raise ExportError(f"Core ML check failed: Core ML and torch differ by {diff:.3g} (allowed {allowed:.3g} at "
                          "float16); nothing was written")
    return how + f"; checked against torch on this Mac: max abs diff {diff:.2g} (allowed {allowed:.2g})"


def export_trial(
        *,
        storage: str | None,
        study: str,
        trial: int,
        out: str | os.PathLike,
        name: str | None = None,
        force: bool = False,
        coreml: bool = False,
        weights: bool = True,
        lut_db: str | None = None,
        measure_runs: int = 30,
) -> ExportResult:
    """Export one complete trial into ``out`` (see the module docstring).

    Args:
        storage: Optuna storage URL or SQLite path (default ``./repnas-search.db``; it must exist).
        study: Study name.
        trial: Trial number.
        out: Folder to write; must be absent or empty unless ``force``.
        name: Model name (``repnas_`` is prefixed; default ``<study>_trial<N>``).
        force: Replace a non-empty ``out`` that holds an earlier export (only once this export succeeded).
        coreml: Also write ``model.mlpackage`` (needs ``coremltools``).
        weights: Include the trial's proxy weights (False: no ``model.safetensors``; the ONNX file is checked on
            a freshly initialized model).
        lut_db: Latency LUT for the card's ort-cpu prediction (default ``./repnas-lut.db``); blocks it lacks are
            measured and added, as every LUT prediction does.
        measure_runs: Timed onnxruntime samples for the card's measured latency.

    Raises:
        StudyStorageError: Unknown storage or study.
        ExportError: Unknown, failed or running trial; non-empty ``out`` without ``force`` (or, with it, a
            folder that is not an earlier export); missing weights; an ONNX file that disagrees with torch.
    """
    _check_args(study=study, force=force, coreml=coreml, weights=weights, measure_runs=measure_runs)
    check_int("--trial", trial, lo=0, what="a trial number (>= 0)", error=ExportError)
    from search_space import check_model_name

    out = Path(out).expanduser().absolute()
    arch = check_model_name(name or default_name(study, trial))
    _check_out(out, force)
    st = load_existing_study(storage, study, must_exist=True)
    job = dict(arch=arch, storage=storage, coreml=coreml, weights=weights, lut_db=lut_db, measure_runs=measure_runs)
    return _export_all(st, [(trial, out, job)])[0]


def _check_args(*, study, force, coreml, weights, measure_runs) -> None:
    if not isinstance(study, str) or not study:
        raise ExportError(f"--study must be a study name, got {study!r}")
    for key, value in (("force", force), ("coreml", coreml), ("weights", weights)):
        if not isinstance(value, bool):
            raise ExportError(f"{key} must be True or False, got {value!r}")
    check_int("--runs", measure_runs, lo=1, what="a whole number >= 1", error=ExportError)
    if coreml:
        import importlib.util

        if importlib.util.find_spec("coremltools") is None:
            raise ExportError("--coreml needs coremltools: pip install coremltools (or pip install 'repnas[coreml]')")


def _export_all(st, jobs: Sequence[tuple[int, Path, dict[str, Any]]]) -> list[ExportResult]:
    """Write every job into a temporary sibling folder; move them all into place only if all succeeded."""
    # an unexportable trial fails before anything is written
    trials = {}
    for n, _, job in jobs:
        t = _get_trial(st, n)
        trials[n] = (t, best_evaluation(st, t, job["storage"]))
    tmps: list[Path] = []
    results: list[ExportResult] = []
    try:
        for trial, out, job in jobs:
            _remove_stale_temporaries(out)
            tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            tmps.append(tmp)
            results.append(_write(st, *trials[trial], tmp, out, **job))
    except BaseException:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    for tmp, (_, out, _), r in zip(tmps, jobs, results):
        _move_into_place(tmp, out)
        _logger.info("exported trial %d of %s to %s as %s", r.trial, st.study_name, out, r.architecture)
    return results


def _write(st, t, best, tmp: Path, out: Path, *, arch: str, storage, coreml: bool, weights: bool, lut_db, measure_runs
           ) -> ExportResult:
    from timm.models import save_for_hf

    from latency_lut import backend_versions, measure_onnx_file, predict_latency
    from search_space import Genome, InvalidGenomeError, create_repnas, default_cfg_for, export_onnx

    from ._pricing import latency_error, latency_label

    rec = TrialRecord.from_trial(best)
    ident = st.user_attrs.get(StudyKeys.CONFIG) or {}
    data = _data_info(st)
    try:
        genome = Genome.from_dict(rec.genome)
        res = int(rec.latency_resolution or genome.resolution)
        if genome.resolution != res:
            genome = genome.with_resolution(res)
    except (InvalidGenomeError, TypeError, ValueError) as e:
        raise ExportError(f"trial {t.number}: stored genome is invalid: {e}") from None
    nc = int(data.num_classes)
    mean, std = data.mean_std_rgb()
    device = ident.get("device", "?")
    is_baseline = rec.baseline is not None
    description = (f"RepNAS {'seed baseline ' + rec.baseline if is_baseline else 'architecture'} from study "
                   f"{st.study_name!r}, trial {t.number}; proxy weights on {data.name}")
    pcfg = default_cfg_for(genome, num_classes=nc, mean=tuple(mean), std=tuple(std), crop_pct=1.0,
                           interpolation="bilinear", description=description, license="apache-2.0")
    model = create_repnas(arch, genome, pretrained=False, num_classes=nc, pretrained_cfg=pcfg)
    has_weights, weights_note = _load_weights(rec.weights if weights else None, model)
    if not weights:
        weights_note = "none: exported with --no-weights"
    model.eval()

    scoring = Scoring.of_study(st)
    score = float(best.values[0])
    accuracy, accuracy_sd = scoring.accuracy(score, rec)
    files = ["config.json"]
    meta = {
        "study": st.study_name, "trial": t.number, "storage": redact_url(resolve_storage_url(storage)),
        "genome_key": genome.key(), "device": device, "latency_ms": float(best.values[1]),
        "latency_source": rec.latency_source or "?", "latency_resolution": res,
        "metric": scoring.metric, "score_is_accuracy": scoring.is_accuracy, "score": score,
        "score_sd": scoring.score_sd(rec), "accuracy": accuracy, "accuracy_sd": accuracy_sd, "seeds": rec.n_seeds,
        "weights_accuracy": rec.accuracies[0] if rec.accuracies else None,
        "rung": rec.rung_or_zero, "fidelity": rec.fidelity, "dataset": data.name, "proxy": data.proxy,
        "proxy_resolution": data.proxy_resolution, "weights": has_weights,
    }
    model_config = {"repnas": meta}
    if has_weights:
        save_for_hf(model, str(tmp), model_args={"genome": genome.to_dict()}, safe_serialization=True,
                    model_config=model_config)
        files.append("model.safetensors")
    else:
        from timm.models._hub import save_config_for_hf

        save_config_for_hf(model, str(tmp / "config.json"), model_args={"genome": genome.to_dict()},
                           model_config=model_config)

    from search_space import reparameterize

    deployed = reparameterize(copy.deepcopy(model)).eval()
    onnx_path = tmp / "model.onnx"
    export_onnx(deployed, onnx_path, (3, res, res))
    diff = _check_onnx(model, deployed, onnx_path, res)
    files.append("model.onnx")
    _logger.info("ONNX check: max |onnxruntime - torch| = %.2g (allowed %.2g)", diff["onnx_vs_torch"],
                 diff["tolerance"])

    _logger.info("measuring model.onnx on ort-cpu (1 thread, %d runs)", measure_runs)
    clocks = measure_onnx_file(onnx_path, (3, res, res), threads=1, runs=measure_runs)
    measured = clocks.latency.median_ms
    lut_note = ""
    try:
        from latency_lut import network_correction, open_table

        table = open_table(lut_db)
        lut_ms = predict_latency(genome, "ort-cpu", res, db=table, num_classes=nc)
        corrected = network_correction("ort-cpu", table, threads=1, resolution=res) is not None
        lut_note = (f"per-block rows of the ort-cpu LUT `{redact_url(table.url)}` (measured on the machine that built "
                    f"them; missing ones measured here now), summed"
                    + (", through its stored network correction" if corrected else ""))
    except Exception as e:  # noqa: BLE001 - the card says why the prediction is missing instead of failing
        _logger.warning("no ort-cpu LUT prediction: %s", e)
        lut_ms, lut_note = None, f"no prediction: {e}"
    coreml_note = ""
    if coreml:
        coreml_note = _coreml(deployed, tmp / "model.mlpackage", res)
        files.append("model.mlpackage")
    versions = backend_versions("ort-cpu")
    result = ExportResult(
        out_dir=out, architecture=arch, trial=t.number, files=files + ["README.md"], has_weights=has_weights,
        onnx_max_abs_diff=diff["onnx_vs_torch"], ort_cpu_measured_ms=measured, ort_cpu_lut_ms=lut_ms,
        search_latency_ms=float(best.values[1]), search_device=device, score=score, accuracy=accuracy,
        extra={"wall_ms": clocks.wall.median_ms, "clock": "thread CPU time" if clocks.cpu is not None else "wall",
               "samples": clocks.wall.runs, "lut_note": lut_note, "versions": versions, "diff": diff,
               "coreml": coreml_note, "weights_note": weights_note,
               "label": latency_label(device) if device != "?" else "?", "meta": meta,
               "latency_error": latency_error(device, rec.genome, res) if device != "?" else None,
               "params": sum(p.numel() for p in deployed.parameters()), "dir": str(out)},
    )
    (tmp / "README.md").write_text(_card(result, genome, data), encoding="utf-8")
    _default_permissions(tmp)
    return result


def _default_permissions(folder: Path) -> None:
    """Files as the user's umask would make them (safetensors writes 0600, the folder is meant to be shared)."""
    mask = os.umask(0)
    os.umask(mask)
    for p in folder.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
    os.chmod(folder, 0o777 & ~mask)


def _score_line(r: ExportResult, m: dict[str, Any], data: StudyData) -> str:
    """The card's sentence on what the proxy scored (accuracy first, the ranked score beside it when it differs)."""
    def sd(key: str) -> str:
        return f" +- {m[key]:.4f} (sd over {m['seeds']} seeds)" if m.get(key) is not None else ""

    if r.accuracy is None:
        return f"{m['metric']}: {r.score:.4f}"
    line = (f"proxy accuracy: **{r.accuracy:.4f}**{sd('accuracy_sd')} on the {data.name} validation subset after the "
            f"search's short proxy training at rung {m.get('rung', 0)}"
            + (f" ({m['fidelity']:,} training images)" if m.get("fidelity") else ""))
    if not m["score_is_accuracy"]:
        line += f"; the search ranked by {m['metric']}: {r.score:.4f}{sd('score_sd')}"
    return line


def _card(r: ExportResult, genome, data: StudyData) -> str:
    from latency_lut import cpu_description

    m = r.extra["meta"]
    res = m["latency_resolution"]
    v = r.extra["versions"]
    ort = ", ".join(f"{k} {val}" for k, val in v.items() if k != "protocol") or "onnxruntime"
    lut = f"{r.ort_cpu_lut_ms:.3f}" if r.ort_cpu_lut_ms is not None else "n/a"
    if r.ort_cpu_lut_ms:
        lut += f" ({r.ort_cpu_lut_ms / r.ort_cpu_measured_ms - 1:+.1%} vs measured)"
    search_how = r.extra["label"] + (f"; this network {r.extra['latency_error']}" if r.extra.get("latency_error")
                                     else "")
    acc_line = _score_line(r, m, data)
    if r.has_weights and m.get("seeds", 1) > 1 and m.get("weights_accuracy") is not None:
        acc_line += (f". The weights here are those of the first seed, which scored {m['weights_accuracy']:.4f}; the "
                     "accuracy above is the mean over the seeds")
    lines = [
        f"# {r.architecture}",
        "",
        f"An architecture found by RepNAS: study `{m['study']}`, trial {r.trial} (storage `{m['storage']}`).",
        f"Deployed form: {r.extra['params'] / 1e6:.2f} M parameters, {data.num_classes} classes, "
        f"{res}x{res} input.",
        "",
        "## Latency",
        "",
        "| device | latency (ms) | how |",
        "| --- | --- | --- |",
        f"| {r.search_device} | {r.search_latency_ms:.3f} | {search_how}; priced by the search at {res}px "
        "with a 1000-class head |",
        f"| ort-cpu | {r.ort_cpu_measured_ms:.3f} | MEASURED on this `model.onnx` at export: median of "
        f"{r.extra['samples']} samples of back-to-back batch-1 calls ({r.extra['clock']}; wall "
        f"{r.extra['wall_ms']:.3f} ms), 1 thread, {ort}, {cpu_description()} |",
        f"| ort-cpu (LUT) | {lut} | PREDICTED: {r.extra['lut_note']} |",
        "",
        "## Accuracy",
        "",
        f"{acc_line}. Proxy: {m['proxy'] or 'see the study'}. This ranks candidates; it is not the accuracy of a "
        "fully trained model.",
        "",
        "## Files",
        "",
        "- `config.json`: timm hub layout (`architecture`, `num_classes`, `pretrained_cfg`, `model_args.genome`).",
        f"- `model.safetensors`: {r.extra['weights_note']}." if r.has_weights else
        f"- no `model.safetensors`: {r.extra['weights_note']}.",
        f"- `model.onnx`: deployed (re-parameterized) form, opset 17, batch 1, {res}x{res}. Checked at export on "
        f"random input: max |onnxruntime - torch| = {r.onnx_max_abs_diff:.2g} with outputs up to "
        f"{r.extra['diff']['output_abs_max']:.3g} (allowed {ONNX_ATOL:g} + {ONNX_RTOL:g} x max |output| = "
        f"{r.extra['diff']['tolerance']:.2g}).",
    ]
    if r.extra["coreml"]:
        lines.append(f"- `model.mlpackage`: Core ML, {r.extra['coreml']}.")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import search_space, timm",
        f"model = search_space.create_model_from_dir({r.extra['dir']!r})  # genome + weights",
        f"search_space.register_dir({r.extra['dir']!r})",
        f"model = timm.create_model({r.architecture!r}, pretrained={r.has_weights}, num_classes=100)  "
        "# new head",
        "deployed = timm.utils.reparameterize_model(model.eval())",
        "```",
        "",
        "## Genome",
        "",
        "```json",
        json.dumps(genome.to_dict(), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def export_pareto(
        *,
        storage: str | None,
        study: str,
        out: str | os.PathLike,
        name: str | None = None,
        force: bool = False,
        coreml: bool = False,
        weights: bool = True,
        lut_db: str | None = None,
        measure_runs: int = 30,
) -> list[ExportResult]:
    """Export every trial of the study's Pareto front into ``out/<name>_trial<N>/`` (all or nothing).

    Arguments as :func:`export_trial`; ``name`` is the prefix (default: the study name).
    """

    from search_space import check_model_name

    from ._config import SearchConfig
    from ._search import collect

    _check_args(study=study, force=force, coreml=coreml, weights=weights, measure_runs=measure_runs)
    out = Path(out).expanduser().absolute()
    _check_out(out, force, holds_exports=True)
    base = name or default_name(study, 0).rsplit("_trial", 1)[0]
    check_model_name(f"{base}_trial0")
    st = load_existing_study(storage, study, must_exist=True)
    # the front at the highest rung reached, as the search reports it
    front = collect(SearchConfig(storage=storage, study=study, baselines=False).scored_as_stored(st), st).front()
    if not front:
        raise ExportError(f"study {study!r} has no complete feasible trial to export")
    jobs = []
    for c in front:
        sub = out / f"{base}_trial{c.number}"
        _check_out(sub, force, parent_made_later=True)
        jobs.append((c.number, sub, dict(arch=check_model_name(sub.name), storage=storage, coreml=coreml,
                                         weights=weights, lut_db=lut_db, measure_runs=measure_runs)))
    created = not out.exists()
    out.mkdir(exist_ok=True)
    try:
        return _export_all(st, jobs)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


def summary_lines(results: Sequence[ExportResult]) -> list[str]:
    """The CLI's table of what was exported (``score``: the study's first objective)."""
    rows = [f"{'trial':>6} {'accuracy':>9} {'score':>9} {'search ms':>10} {'ort-cpu ms':>11} {'LUT ms':>8} "
            f"{'onnx diff':>9}  folder"]
    for r in results:
        lut = f"{r.ort_cpu_lut_ms:.3f}" if r.ort_cpu_lut_ms is not None else "n/a"
        acc = f"{r.accuracy:.4f}" if r.accuracy is not None else "n/a"
        rows.append(f"{r.trial:>6} {acc:>9} {r.score:>9.4f} {r.search_latency_ms:>10.3f} "
                    f"{r.ort_cpu_measured_ms:>11.3f} {lut:>8} {r.onnx_max_abs_diff:>9.1e}  {r.out_dir} "
                    f"({r.architecture})")
    return rows
