"""python -m latency_lut: device latency lookup tables.

  devices    list devices: measured here, predicted (iphone12, with its calibration error), remote in the LUT
  build      fill a device's LUT with every block signature of the search space (or of given genomes);
             resumable: rows already stored are skipped, each row is committed as it is measured
  show       list the stored rows of a device
  predict    latency of a zoo model or genome JSON file from the LUT (deployed form)
  validate   measure N random genomes end to end and compare with the LUT sum (share within +-10%/+-5%,
             MAPE, Spearman)
  calibrate  refit the iphone12 cost model on the published latencies and rewrite its JSON
  bundle     for a remote device (any new name: my-pi, pixel7): write one ONNX micro-model per signature it has
             no row for, a manifest, and run_bundle.py, a standalone runner needing only numpy and onnxruntime
  import     load the runner's results.json for a remote device: validated as a whole before anything is
             stored; per-call overhead subtracted; rows already stored are kept

Remote device workflow (any new device name, e.g. my-pi):
  here:      python -m latency_lut bundle --device my-pi --out pi-bundle
  on my-pi:  cd pi-bundle; pip install numpy onnxruntime; python run_bundle.py --threads 1 --out results.json
  here:      python -m latency_lut import --device my-pi results.json
             python -m latency_lut predict repvit_m0_9 --device my-pi

Every command takes --db (a SQLite file path or any SQLAlchemy URL; default ./repnas-lut.db or $REPNAS_LUT_DB).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

_logger = logging.getLogger("latency_lut")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, help="SQLite file or SQLAlchemy URL (default ./repnas-lut.db)")
    p.add_argument("-v", "--verbose", action="store_true")


def _genome_arg(spec: str):
    from search_space import Genome, zoo

    if spec in zoo:
        return zoo[spec]
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"{spec!r} is neither a zoo model ({', '.join(sorted(zoo))}) nor a genome JSON file")
    if path.is_dir():
        raise ValueError(f"{spec!r} is a folder, not a genome JSON file (or a zoo model: {', '.join(sorted(zoo))})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the genome JSON file {spec!r}: {getattr(e, 'strerror', None) or e}") from None
    return Genome.from_json(text)


def cmd_devices(args) -> int:
    from . import LatencyTable, builtin_devices

    devs = builtin_devices()
    for d in devs.values():
        print(f"{d.name:12s} {d.kind:9s} {d.description}")
        for line in d.details():
            print(f"{'':12s} {line}")
    table = LatencyTable(args.db)
    for name, n in sorted(table.devices().items()):
        kind = devs[name].kind if name in devs else "remote"
        print(f"LUT {table.safe_url}: {name} ({kind}): {n} rows")
    return 0


def cmd_build(args) -> int:
    from . import build_lut, get_device
    from ._lut import _check_timing

    get_device(args.device).check_threads(args.threads)
    _check_timing(args.runs, 5)
    genomes, resolution = _genomes(args)
    res = build_lut(args.device, db=args.db, genomes=genomes, resolution=resolution, threads=args.threads,
                    runs=args.runs, progress=not args.no_progress)
    print(f"{args.device}: {res['total']} signatures, {res['skipped']} already stored, {res['added']} added")
    return 0


def cmd_show(args) -> int:
    from . import LatencyTable, get_device

    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    dev = get_device(args.device, allow_remote=True)
    rows = LatencyTable(args.db).records(args.device)
    print(f"{args.device}: {dev.label()}")
    for r in rows[: args.limit]:
        sig = {k: v for k, v in r.signature.items() if k != "type"}
        print(f"{r.block_type:10s} {r.median_ms:9.4f} ms  [{r.p10_ms:.4f}-{r.p90_ms:.4f}]  {r.source.value:9s} {sig}")
    print(f"{len(rows)} rows for {args.device}" + (f" (showing {args.limit})" if len(rows) > args.limit else ""))
    return 0


def cmd_predict(args) -> int:
    from . import LatencyTable, get_device, predict_latency

    dev = get_device(args.device, allow_remote=True)
    dev.check_threads(args.threads)
    g = _genome_arg(args.model)
    res = g.resolution if args.resolution is None else args.resolution
    ms = predict_latency(g, args.device, res, db=LatencyTable(args.db), threads=args.threads)
    print(f"{args.model} @ {res}x{res}: {ms:.3f} ms ({dev.label()})")
    return 0


def cmd_validate(args) -> int:
    from . import validate_lut

    rep = validate_lut(args.device, n=args.n, seed=args.seed, resolution=args.resolution, db=args.db,
                       threads=args.threads, progress=not args.no_progress)
    print(rep.summary())
    return 0


def _genomes(args):
    """The genomes of --genome/--zoo (None: the whole space) and the resolution to pass the API.

    Without --resolution every genome is taken at its own resolution (a zoo model at its native one). With
    --resolution R a --genome is taken at R (an error where it is invalid there); a --zoo model invalid at R
    (mobilevit_xs at 224) is taken at its native resolution instead, and a log line says so.
    """
    from search_space import RepNASError, zoo

    if not args.genome and not args.zoo:
        return None, 224 if args.resolution is None else args.resolution
    genomes = [_genome_arg(g) for g in args.genome]
    if args.resolution is not None:
        genomes = [g if g.resolution == args.resolution else g.with_resolution(args.resolution) for g in genomes]
    if args.zoo:
        if args.resolution is None:
            _logger.info("--zoo: each model at its native resolution (%s); pass --resolution R to take them at R "
                         "where they are valid", ", ".join(f"{n} {g.resolution}" for n, g in zoo.items()))
        for name, g in zoo.items():
            if args.resolution is None or g.resolution == args.resolution:
                genomes.append(g)
                continue
            try:
                genomes.append(g.with_resolution(args.resolution))
            except RepNASError as e:
                _logger.info("--zoo: %s is not valid at resolution %d (%s); taking it at its native resolution %d",
                             name, args.resolution, e, g.resolution)
                genomes.append(g)
    return genomes, None


def cmd_bundle(args) -> int:
    from ._bundle import RUNNER_NAME, _remote_device, write_bundle

    _remote_device(args.device, "bundle")
    genomes, resolution = _genomes(args)
    res = write_bundle(args.device, args.out, db=args.db, genomes=genomes, resolution=resolution, limit=args.limit,
                       force=args.force, progress=not args.no_progress)
    if not res.n_models:
        print(f"{args.device}: all {res.n_signatures} signatures are already in the LUT; nothing to bundle")
        return 0
    left = res.n_signatures - res.n_stored - res.n_models
    print(f"{args.device}: {res.n_signatures} signatures, {res.n_stored} already stored, {res.n_models} micro-models "
          f"written to {res.out}" + (f" ({left} more left out by --limit)" if left else ""))
    print(f"next: copy {res.out} to the device; there run `pip install numpy onnxruntime` and "
          f"`python {RUNNER_NAME} --threads 1 --out results.json`; then here run "
          f"`python -m latency_lut import --device {args.device} results.json`")
    return 0


def cmd_import(args) -> int:
    from ._bundle import import_results

    res = import_results(args.device, args.results, db=args.db, progress=not args.no_progress)
    host = res.host
    print(f"{res.device}: {res.stored} rows stored, {res.already_present} already present (kept as they were); "
          f"per-call overhead {res.call_overhead_ms:.4f} ms subtracted; {host.get('threads')} thread(s), "
          f"onnxruntime {host.get('onnxruntime', '?')} on {host.get('platform', '?')}")
    if res.failed_on_device:
        print(f"{res.failed_on_device} models failed to run on the device and were not stored (see 'failed' in "
              f"{args.results})")
    return 0


def cmd_calibrate(args) -> int:
    from . import calibrate_iphone12

    calibrate_iphone12(csv_path=args.csv, out_path=args.out)
    return 0


_RESOLUTION_HELP = ("input resolution (default: each --genome/--zoo model at its own resolution, the whole space "
                    "at 224; a --zoo model invalid at the one given is taken at its native resolution)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latency_lut", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("devices", help="list devices and LUT contents")
    _common(p)
    p.set_defaults(fn=cmd_devices)

    p = sub.add_parser("build", help="fill a device's LUT (resumable)")
    _common(p)
    p.add_argument("--device", required=True)
    p.add_argument("--resolution", type=int, default=None, help=_RESOLUTION_HELP)
    p.add_argument("--genome", action="append", default=[], help="only this zoo name / genome JSON (repeatable)")
    p.add_argument("--zoo", action="store_true", help="only the signatures of the seed zoo")
    p.add_argument("--threads", type=int, default=1, help="1 on ort-cpu (multi-thread LUT sums over-predict)")
    p.add_argument("--runs", type=int, default=30, help="timed samples per block (>= 1)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_build)

    p = sub.add_parser("show", help="list a device's stored rows")
    _common(p)
    p.add_argument("--device", required=True)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("predict", help="latency of a zoo model or genome JSON from the LUT")
    _common(p)
    p.add_argument("model", help="zoo name or genome JSON file")
    p.add_argument("--device", required=True)
    p.add_argument("--resolution", type=int, default=None, help="default: the genome's resolution")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("validate", help="LUT sum against end-to-end measurement of random genomes")
    _common(p)
    p.add_argument("--device", default="ort-cpu")
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("calibrate", help="refit the iphone12 cost model (writes its JSON)")
    p.add_argument("--csv", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(fn=cmd_calibrate)

    p = sub.add_parser(
        "bundle", help="write ONNX micro-models + a standalone runner for a remote device",
        description="Write, for a remote device, one ONNX micro-model (deployed form, batch 1) per block signature "
                    "that the LUT has no row for on it (all of the search space at --resolution, or only those of "
                    "--genome/--zoo), plus manifest.json (signatures, input shapes, sha256 of every file), "
                    "run_bundle.py (needs only numpy and onnxruntime: a phone under Termux, a Raspberry Pi, a "
                    "laptop) and README.txt. Copy DIR to the device, run `python run_bundle.py --threads 1 --out "
                    "results.json` there, and load the results with `import`. Built-in devices are refused: "
                    "measured ones are filled with `build`, iphone12 is predicted.")
    _common(p)
    p.add_argument("--device", required=True, help="the remote device's name (lower case: letters, digits, ._-)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the bundle (new or empty unless --force)")
    p.add_argument("--resolution", type=int, default=None, help=_RESOLUTION_HELP)
    p.add_argument("--genome", action="append", default=[], help="only this zoo name / genome JSON (repeatable)")
    p.add_argument("--zoo", action="store_true", help="only the signatures of the seed zoo")
    p.add_argument("--limit", type=int, default=None, help="write at most this many micro-models")
    p.add_argument("--force", action="store_true", help="write into DIR even if it is not empty")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_bundle)

    p = sub.add_parser(
        "import", help="store a remote device's results.json (validated first)",
        description="Load the results.json that run_bundle.py wrote on a remote device. The whole file is "
                    "validated before anything is stored: a file for another device, unknown signatures, missing, "
                    "negative or inconsistent timings are rejected with a message and the LUT is left as it was. "
                    "Timings are stored with the measured per-call overhead subtracted (it is added back once per "
                    "network by predict); rows already in the LUT are kept, never overwritten.")
    _common(p)
    p.add_argument("results", metavar="RESULTS.json", help="the results file written by run_bundle.py")
    p.add_argument("--device", required=True, help="the remote device the results were measured on")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_import)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    from search_space import RepNASError

    from ._secrets import scrub

    try:
        return args.fn(args)
    except (RepNASError, ValueError, OSError) as e:
        # a driver's message may quote the database URL: no secret of it is ever printed
        urls = [getattr(args, "db", None), os.environ.get("REPNAS_LUT_DB")]
        print(f"error: {scrub(' '.join(str(e).split()), urls)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rows measured so far are stored; rerun the command to finish", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
