"""Remote devices: write a bundle of ONNX micro-models and a standalone runner, import the runner's results.

``write_bundle`` exports one deployed micro-model per signature the device has no LUT row for, a manifest
(signatures, input shapes, sha256 of every file), a trivial model to time the runtime's per-call overhead,
and ``run_bundle.py`` (a copy of ``_runner_template.py``: stdlib, numpy and onnxruntime only). The user runs
it on the device; ``import_results`` validates the whole results file before storing any of it, then stores
each timing with the measured per-call overhead subtracted (``Source.IMPORTED``). Rows already stored are
skipped, never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space import Genome, SearchSpace, atomic_write, check_int, is_int, is_number

from ._db import LatencyRecord, LatencyTable, open_table
from ._devices import get_device
from ._errors import ResultsFileError
from ._signatures import BLOCK_TYPES, build_unit, signature_key
from ._sources import LatencySource

__all__ = ["BundleSummary", "ImportSummary", "import_results", "write_bundle"]

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_KIND = "repnas-latency-bundle"
RESULTS_KIND = "repnas-latency-results"
RUNNER_NAME = "run_bundle.py"
OVERHEAD_SHAPE = (8, 4, 4)  # the trivial model timed for the per-call overhead (as ``call_overhead_ms`` does here)
_MAX_CHANNELS = 4096  # larger signatures are not built while validating (a damaged file must not exhaust memory)
_MAX_SPATIAL = 4096
_SHOW = 5  # offending keys named in a rejection message
_MAX_OVERHEAD_MS = 1000.0  # a per-call overhead above this is not an overhead


@dataclass(frozen=True)
class BundleSummary:
    """What ``write_bundle`` wrote (``n_models == 0``: nothing was missing, nothing was written)."""

    out: Path
    device: str
    bundle_id: str
    n_signatures: int  # signatures selected (space or genomes)
    n_stored: int  # of those, already in the LUT
    n_models: int  # micro-models written


@dataclass(frozen=True)
class ImportSummary:
    """What ``import_results`` stored."""

    device: str
    stored: int
    already_present: int
    failed_on_device: int  # models the runner could not run there (not stored)
    call_overhead_ms: float
    host: dict[str, Any] = field(default_factory=dict)


def _remote_device(name: str, command: str) -> LatencySource:
    """``name`` as a remote device; built-in devices are refused (they are measured or predicted here)."""
    dev = get_device(name, allow_remote=True)
    refusal = dev.bundle_refusal(command)
    if refusal is not None:
        raise ValueError(refusal)
    return dev


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import onnx
    import torch

    from search_space import OPSET, __version__

    v = {"repnas": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "opset": str(OPSET)}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return v


_README = """\
RepNAS latency bundle for device {device!r} (bundle {bundle_id}, {n} micro-models)

Copy this whole folder to the device, then run there (Python 3.8+; needs only numpy and onnxruntime):

    pip install numpy onnxruntime
    python run_bundle.py --threads 1 --out results.json

It checks every model file against manifest.json (sha256), times each model (warm-up, then repeated
runs; median, 10th and 90th percentiles) and the runtime's per-call overhead, and writes results.json.
An interrupted run resumes when started again with the same --out. Keep --threads 1: LUT sums of
per-model timings at more than one thread over-predict multi-threaded networks (by ~61% at 2 threads
with onnxruntime on the reference machine). Use --runs/--warmup to trade time for precision, --limit N
to time only N models per run.

Copy results.json back, then on the machine that holds the LUT:

    python -m latency_lut import --device {device} results.json
"""


def write_bundle(
        device: str, out: str | os.PathLike, *, db: LatencyTable | str | None = None, space: SearchSpace | None = None,
        genomes: Iterable[Genome] | None = None, resolution: int | None = 224, num_classes: int = 1000,
        limit: int | None = None, force: bool = False, progress: bool = True,
) -> BundleSummary:
    """Write a bundle for a remote ``device`` into ``out``: one ONNX micro-model per signature it lacks.

    The signatures are those of ``genomes`` (or of ``space``, default the whole space at ``resolution``)
    that the LUT has no row for on ``device``; ``limit`` caps how many are written. ``out`` must be empty
    or missing unless ``force``. ``resolution`` None takes each of ``genomes`` at its own resolution.
    """
    from search_space import export_onnx

    from ._lut import _signatures_to_do
    from ._measure import _Empty

    dev = _remote_device(device, "bundle")
    if limit is not None:
        check_int("`limit` (--limit)", limit, lo=0, what="an integer >= 0")
    if genomes is not None:
        genomes = list(genomes)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"--out {out} is not empty; pass --force to write the bundle into it anyway, "
                         "or choose an empty or new folder")
    table = open_table(db)
    todo_all, todo = _signatures_to_do(dev.name, table, space=space, genomes=genomes, resolution=resolution,
                                       num_classes=num_classes)
    n_stored = len(todo_all) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    if not todo:
        _logger.info("%s: all %d signatures are already in %s; nothing to bundle", dev.name, len(todo_all),
                     table.safe_url)
        return BundleSummary(out, dev.name, "", len(todo_all), n_stored, 0)

    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    keys = [signature_key(s) for s in todo]
    bundle_id = hashlib.sha256(json.dumps([dev.name, created.isoformat(), keys]).encode()).hexdigest()[:16]
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    if force:
        _remove_previous_models(out)

    from tqdm.auto import tqdm

    names = {k[:12] for k in keys}
    short = len(names) == len(keys)  # 12 hex digits name every file unless two keys share them
    entries = []
    for sig, key in zip(tqdm(todo, desc=f"bundle {dev.name}", unit="model", disable=not progress), keys):
        rel = f"models/{key[:12] if short else key}.onnx"
        export_onnx(build_unit(sig), out / rel, tuple(sig["in"]), batch_size=1)
        entries.append({"key": key, "block_type": sig["type"], "signature": sig, "input_shape": list(sig["in"]),
                        "file": rel, "sha256": _sha256(out / rel)})
    overhead_rel = "models/overhead.onnx"
    export_onnx(_Empty(), out / overhead_rel, OVERHEAD_SHAPE, batch_size=1)

    manifest = {
        "kind": MANIFEST_KIND, "format_version": FORMAT_VERSION, "device": dev.name, "bundle_id": bundle_id,
        "created": created.isoformat(), "versions": _versions(), "resolution": resolution,
        "resolutions": sorted({g.resolution if resolution is None else resolution for g in genomes})
        if genomes is not None else [224 if resolution is None else resolution],
        "num_classes": num_classes, "selection": "genomes" if genomes is not None else "search space",
        "overhead": {"file": overhead_rel, "sha256": _sha256(out / overhead_rel), "input_shape": list(OVERHEAD_SHAPE)},
        "entries": entries,
    }
    runner = out / RUNNER_NAME
    runner.write_text(Path(__file__).with_name("_runner_template.py").read_text(encoding="utf-8"), encoding="utf-8")
    runner.chmod(0o755)
    (out / "README.txt").write_text(_README.format(device=dev.name, bundle_id=bundle_id, n=len(entries)),
                                    encoding="utf-8")
    # last: a bundle without a manifest is visibly unfinished
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    size_mb = sum(p.stat().st_size for p in models.iterdir()) / 1e6
    _logger.info("wrote %s: %d micro-models (%.1f MB), manifest.json, %s, README.txt (bundle %s)", out,
                 len(entries), size_mb, RUNNER_NAME, bundle_id)
    return BundleSummary(out, dev.name, bundle_id, len(todo_all), n_stored, len(entries))


def _remove_previous_models(out: Path) -> None:
    """With --force: delete the model files an earlier bundle's manifest in ``out`` lists (and nothing else)."""
    if (out / "results.json").exists():
        _logger.warning("%s is kept (timings of an earlier bundle): import it if not done yet, and move it away "
                        "before running the new bundle, which will not resume it", out / "results.json")
    try:
        old = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        files = [e["file"] for e in old["entries"]] + [old["overhead"]["file"]]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for rel in files:
        p = (out / rel).resolve()
        if p.parent == (out / "models").resolve() and p.suffix == ".onnx":
            p.unlink(missing_ok=True)


# -- import ---------------------------------------------------------------------------------------------


def _number_problem(name: str, v: Any) -> str | None:
    if v is None:
        return f"missing {name}"
    if not is_number(v):
        return f"{name} is not a number ({v!r})"
    if not math.isfinite(v):
        return f"{name} is {v}"
    if v < 0:
        return f"negative {name} ({v})"
    return None


def _signature_problem(key: str, entry: dict[str, Any]) -> str | None:
    sig = entry.get("signature")
    if not isinstance(sig, dict):
        return "missing signature"
    if signature_key(sig) != key:
        return "unknown signature (it does not hash to its key)"
    if sig.get("type") not in BLOCK_TYPES:
        return f"unknown signature (block type {sig.get('type')!r})"
    shape = sig.get("in")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(is_int(v) and v > 0 for v in shape)
            or shape[0] > _MAX_CHANNELS or max(shape[1:]) > _MAX_SPATIAL
            or not isinstance(sig.get("out", 1), int) or sig.get("out", 1) > _MAX_CHANNELS):
        return f"unknown signature (input shape {shape!r})"
    try:
        build_unit(sig)
    except Exception as e:  # noqa: BLE001 - any failure to build means this code does not know the signature
        return f"unknown signature ({type(e).__name__}: {e})"
    return None


def _entry_problem(key: str, entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    for name in ("median_ms", "p10_ms", "p90_ms"):
        problem = _number_problem(name, entry.get(name))
        if problem:
            return problem
    if not entry["p10_ms"] <= entry["median_ms"] <= entry["p90_ms"]:
        return (f"inconsistent timings (p10 {entry['p10_ms']:.4g} <= median {entry['median_ms']:.4g} <= p90 "
                f"{entry['p90_ms']:.4g} does not hold)")
    runs = entry.get("runs")
    if not is_int(runs) or runs < 1:
        return f"runs must be a positive integer, got {runs!r}"
    return _signature_problem(key, entry)


def _reject(path: Path, what: str) -> ResultsFileError:
    return ResultsFileError(f"{path}: {what}; nothing was stored")


def _read_results(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultsFileError(f"cannot read the results file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise _reject(path, "not a text (JSON) file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _reject(path, f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND:
        raise _reject(path, "not a results file written by run_bundle.py")
    if data.get("format_version") != FORMAT_VERSION:
        raise _reject(path, f"results format version {data.get('format_version')!r} is not supported "
                            f"(this version reads {FORMAT_VERSION})")
    return data


def _check_against_manifest(path: Path, bundle_id: str, results: dict[str, Any]) -> list[tuple[str, str]]:
    """If the bundle's manifest sits next to the results file, every result must be one of its entries."""
    manifest_path = path.parent / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(manifest, dict) or manifest.get("bundle_id") != bundle_id:
        return []
    known = {e.get("key") for e in manifest.get("entries", []) if isinstance(e, dict)}
    return [(k, f"not in the bundle's manifest {manifest_path}") for k in results if k not in known]


def import_results(
        device: str, path: str | os.PathLike, *, db: LatencyTable | str | None = None, progress: bool = True,
) -> ImportSummary:
    """Validate a ``run_bundle.py`` results file for remote ``device`` and store its timings.

    Everything is validated before anything is stored: a file for another device, unknown signatures,
    missing, negative, non-finite or inconsistent timings raise :class:`ResultsFileError` naming the first
    offending keys, and the LUT is left as it was. Stored rows have the per-call overhead subtracted
    (clamped at 0); rows already in the LUT are kept as they are.
    """

    dev = _remote_device(device, "import")
    path = Path(path).expanduser()
    data = _read_results(path)
    if data.get("device") != dev.name:
        raise _reject(path, f"these results were measured for device {data.get('device')!r}, not {dev.name!r} "
                            f"(import them with --device {data.get('device')}, or pass the results of {dev.name!r})")
    bundle_id = data.get("bundle_id")
    if not isinstance(bundle_id, str) or not bundle_id:
        raise _reject(path, "missing bundle_id")
    problem = _number_problem("call_overhead_ms", data.get("call_overhead_ms"))
    if problem:
        raise _reject(path, problem)
    overhead = float(data["call_overhead_ms"])
    if overhead > _MAX_OVERHEAD_MS:
        raise _reject(path, f"implausible per-call overhead call_overhead_ms={overhead:g} ms (an almost empty model "
                            f"takes well under {_MAX_OVERHEAD_MS:g} ms)")
    host = data.get("host")
    threads = host.get("threads") if isinstance(host, dict) else None
    if not is_int(threads) or threads < 1:
        raise _reject(path, "missing or malformed host information (host.threads)")
    results = data.get("results")
    if not isinstance(results, dict):
        raise _reject(path, "missing results")
    failed = data.get("failed") if isinstance(data.get("failed"), dict) else {}
    if not results:
        raise _reject(path, "no timings in it" + (f" ({len(failed)} models failed to run there)" if failed else ""))

    from tqdm.auto import tqdm

    bad = _check_against_manifest(path, bundle_id, results)
    # building every signature's module takes ~20 ms each: show progress on large files
    for key, entry in tqdm(results.items(), desc=f"validate {path.name}", unit="entry",
                           disable=not progress or len(results) < 200):
        problem = _entry_problem(key, entry)
        if problem:
            bad.append((key, problem))
            if len(bad) > 100:  # enough to say what is wrong; do not build thousands of modules for it
                break
    if bad:
        shown = "; ".join(f"{k}: {why}" for k, why in bad[:_SHOW])
        more = f" (and {len(bad) - _SHOW} more)" if len(bad) > _SHOW else ""
        raise _reject(path, f"{len(bad)}{'+' if len(bad) > 100 else ''} of {len(results)} entries rejected: "
                            f"{shown}{more}")
    typical = float(sorted(e["median_ms"] for e in results.values())[len(results) // 2])
    if overhead >= typical:
        zero = sum(1 for e in results.values() if e["median_ms"] <= overhead)
        raise _reject(path, f"implausible per-call overhead call_overhead_ms={overhead:g} ms: it is not below the "
                            f"median timing of its models ({typical:g} ms), so subtracting it would store {zero} of "
                            f"{len(results)} rows as 0 ms (the overhead, timed on an almost empty model, must be a "
                            "small part of each timing)")
    if threads > 1:
        _logger.warning("%s: %s was timed with %d threads; LUT sums of multi-thread per-model timings over-predict "
                        "whole multi-threaded networks (by ~61%% at 2 threads with onnxruntime on the reference "
                        "machine): timings at --threads 1 are the ones validated", dev.name, path, threads)

    now = _dt.datetime.now(_dt.timezone.utc)
    versions = {k: str(host[k]) for k in ("onnxruntime", "numpy", "python", "platform", "machine", "provider")
                if k in host}
    versions.update(call_overhead_ms=f"{overhead:.5f}", bundle_id=bundle_id, timings="overhead subtracted")
    shift = lambda v: max(float(v) - overhead, 0.0)  # noqa: E731
    records = [
        LatencyRecord(
            device=dev.name, signature_key=key, block_type=e["signature"]["type"], signature=e["signature"],
            median_ms=shift(e["median_ms"]), p10_ms=shift(e["p10_ms"]), p90_ms=shift(e["p90_ms"]), runs=e["runs"],
            source=dev.source, backend=dev.backend, versions=versions, threads=threads, created_at=now,
        )
        for key, e in results.items()
    ]
    table = open_table(db)
    stored = table.add_many(records)
    _logger.debug("%s: %d rows stored, %d already present in %s (from %s)", dev.name, stored, len(records) - stored,
                 table.safe_url, path)
    return ImportSummary(dev.name, stored, len(records) - stored, len(failed), overhead, dict(host))
