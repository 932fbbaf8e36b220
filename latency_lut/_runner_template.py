#!/usr/bin/env python3
"""RepNAS latency bundle runner: time every ONNX micro-model of this bundle with onnxruntime.

Copied next to ``manifest.json`` as ``run_bundle.py`` by ``python -m latency_lut bundle``. It needs only
Python 3.8+, numpy and onnxruntime (a phone under Termux, a Raspberry Pi, a laptop)::

    pip install numpy onnxruntime
    python run_bundle.py --threads 1 --out results.json

then, on the machine that holds the LUT::

    python -m latency_lut import --device DEVICE results.json

Every model file to be timed is checked against the manifest's sha256 first. Each model is warmed up, then timed over
``--runs`` samples (a sample averages several consecutive calls when one call takes well under a millisecond);
the median, 10th and 90th percentiles are written. The runtime's fixed per-call cost is timed on the bundle's
trivial ``overhead.onnx`` model and written once as ``call_overhead_ms``: the per-model timings in the file
include it (``timings_include_call_overhead``); ``import`` subtracts it. The results file is rewritten
atomically every few seconds, so an interrupted run resumes where it stopped when run again with the same
``--out``.

This file must import nothing but the standard library, numpy and onnxruntime.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

FORMAT_VERSION = 1
RESULTS_KIND = "repnas-latency-results"
MANIFEST_KIND = "repnas-latency-bundle"
CHECKPOINT_S = 10.0  # rewrite the results file at most this often (and at the end)


class RunnerError(Exception):
    """A problem with the bundle or the results file: printed as one line, exit status 2."""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_manifest(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except OSError as e:
        raise RunnerError(f"cannot read the manifest {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise RunnerError(f"{path} is not valid JSON ({e}); copy the bundle again") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise RunnerError(f"{path} is not a RepNAS bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RunnerError(f"{path} has bundle format version {manifest.get('format_version')!r}; this runner "
                          f"reads version {FORMAT_VERSION} (use the run_bundle.py shipped with that bundle)")
    return manifest


def _verify_files(root: str, entries: list) -> None:
    """Every file about to be timed exists and has the sha256 the manifest records (damaged copies fail early)."""
    bad = []
    for entry in entries:
        path = os.path.join(root, entry["file"])
        if not os.path.isfile(path):
            bad.append(f"{entry['file']} (missing)")
        elif _sha256(path) != entry["sha256"]:
            bad.append(f"{entry['file']} (sha256 mismatch)")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise RunnerError(f"{len(bad)} bundle file(s) missing or damaged: {', '.join(bad[:5])}{more}; "
                          "copy the bundle again")


def _session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def _time_model(path: str, input_shape, *, threads: int, warmup: int, runs: int, target_ms: float = 1.0) -> dict:
    """Median and spread (ms) of one batch-1 call, overhead included: warm-up, then ``runs`` timed samples."""
    sess = _session(path, threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1,) + tuple(input_shape)).astype(np.float32)
    feed = {name: x}
    sess.run(None, feed)
    t0 = time.perf_counter()
    sess.run(None, feed)
    once = (time.perf_counter() - t0) * 1e3
    inner = max(1, min(50, int(target_ms / max(once, 1e-3))))  # consecutive calls per sample for sub-ms models
    for _ in range(warmup):
        sess.run(None, feed)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            sess.run(None, feed)
        samples.append((time.perf_counter() - t0) * 1e3 / inner)
    p10, p50, p90 = np.percentile(np.asarray(samples, dtype=np.float64), [10, 50, 90])
    return {"median_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90), "runs": len(samples),
            "calls_per_sample": inner}


def _host(threads: int) -> dict:
    import onnxruntime as ort

    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__,
            "provider": "CPUExecutionProvider", "threads": threads, "cpu_count": os.cpu_count()}


def _write_atomic(path: str, data: dict) -> None:
    # Deliberately not search_space.atomic_write: this file is copied into bundles as run_bundle.py and runs on
    # devices without the RepNAS packages (stdlib, numpy and onnxruntime only). Unlike that helper it fsyncs.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_previous(path: str, manifest: dict, threads: int) -> dict | None:
    """An earlier (possibly partial) results file of this bundle to resume, or None if there is none."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise RunnerError(f"{path} exists but cannot be read as results ({e}); "
                          "move it away or pass another --out") from None
    if not isinstance(old, dict) or old.get("kind") != RESULTS_KIND or old.get("format_version") != FORMAT_VERSION:
        raise RunnerError(f"{path} exists and is not a results file of this runner; move it away or pass another --out")
    if old.get("bundle_id") != manifest["bundle_id"] or old.get("device") != manifest["device"]:
        raise RunnerError(f"{path} holds results of another bundle ({old.get('device')!r}, {old.get('bundle_id')!r}); "
                          "move it away or pass another --out")
    if old.get("host", {}).get("threads") != threads:
        raise RunnerError(f"{path} was measured with --threads {old.get('host', {}).get('threads')}; resume with "
                          "the same --threads, or pass another --out")
    return old


def run(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(
        description="Time every ONNX micro-model of this RepNAS bundle with onnxruntime (needs numpy and "
                    "onnxruntime only) and write a results file for `python -m latency_lut import`.")
    parser.add_argument("--manifest", default=os.path.join(here, "manifest.json"),
                        help="the bundle's manifest (default: manifest.json next to this script)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--runs", type=int, default=30, help="timed samples per model (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model first (default 5)")
    parser.add_argument("--out", default=None, help="results JSON (default: results.json next to the manifest); "
                        "an existing results file of this bundle is resumed: models already in it are skipped")
    parser.add_argument("--limit", type=int, default=None, help="time at most this many models in this run")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.runs < 1 or args.warmup < 0 or (args.limit is not None and args.limit < 0):
        parser.error("--threads and --runs must be >= 1, --warmup and --limit >= 0")
    if args.threads > 1:
        print(f"warning: --threads {args.threads}: LUT sums of per-model timings at more than one thread over-predict "
              "multi-threaded networks (by ~61% at 2 threads with onnxruntime on the reference machine); "
              "--threads 1 is the setting that is validated", file=sys.stderr)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("error: onnxruntime is not installed here: pip install numpy onnxruntime", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    manifest_path = os.path.abspath(args.manifest)
    root = os.path.dirname(manifest_path)
    manifest = _load_manifest(manifest_path)
    out = os.path.abspath(args.out or os.path.join(root, "results.json"))
    old = _load_previous(out, manifest, args.threads)
    results = dict(old["results"]) if old else {}
    failed = dict(old.get("failed", {})) if old else {}
    todo = [e for e in manifest["entries"] if e["key"] not in results]
    if args.limit is not None:
        todo = todo[: args.limit]
    _verify_files(root, [manifest["overhead"]] + todo)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if old:
        log(f"resuming {out}: {len(results)} of {len(manifest['entries'])} models already timed")
        overhead = old["call_overhead"]
    else:
        ov = manifest["overhead"]
        overhead = _time_model(os.path.join(root, ov["file"]), ov["input_shape"], threads=args.threads,
                               warmup=20, runs=max(200, args.runs))
    log(f"device {manifest['device']}: per-call overhead {overhead['median_ms']:.4f} ms; "
        f"timing {len(todo)} models with {args.threads} thread(s)")
    data = {
        "kind": RESULTS_KIND, "format_version": FORMAT_VERSION, "device": manifest["device"],
        "bundle_id": manifest["bundle_id"], "host": _host(args.threads),
        "started": old["started"] if old else datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "call_overhead_ms": overhead["median_ms"], "call_overhead": overhead,
        "timings_include_call_overhead": True, "runs_requested": args.runs, "warmup": args.warmup,
        "results": results, "failed": failed,
    }
    last_write = t_start = time.perf_counter()
    try:
        for i, entry in enumerate(todo):
            try:
                stats = _time_model(os.path.join(root, entry["file"]), entry["input_shape"], threads=args.threads,
                                    warmup=args.warmup, runs=args.runs)
            except Exception as e:  # noqa: BLE001 - a model this onnxruntime cannot run: record it and go on
                failed[entry["key"]] = f"{type(e).__name__}: {str(e).strip()[:300]}"
                continue
            failed.pop(entry["key"], None)
            results[entry["key"]] = dict(stats, block_type=entry["block_type"], signature=entry["signature"])
            now = time.perf_counter()
            if now - last_write > CHECKPOINT_S:
                _write_atomic(out, data)
                last_write = now
                done = i + 1
                eta = (now - t_start) / done * (len(todo) - done)
                log(f"{done}/{len(todo)} models timed, about {eta / 60:.1f} min left (saved to {out})")
    except KeyboardInterrupt:
        _write_atomic(out, data)
        print(f"interrupted: {len(results)} results saved to {out}; run the same command again to resume",
              file=sys.stderr)
        return 130
    data["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    _write_atomic(out, data)
    left = len(manifest["entries"]) - len(results) - len(failed)
    log(f"wrote {out}: {len(results)} of {len(manifest['entries'])} models timed"
        + (f", {len(failed)} failed to run" if failed else "")
        + (f", {left} still to do (run again to resume)" if left else ""))
    log(f"next, on the machine with the LUT: python -m latency_lut import --device {manifest['device']} "
        f"{os.path.basename(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
