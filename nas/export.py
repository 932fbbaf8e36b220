"""python -m nas.export: a searched architecture as a timm model folder, with weights and a verified ONNX.

Writes DIR/config.json (timm hub layout: architecture, num_classes, pretrained_cfg, model_args with the
genome), DIR/model.safetensors (the trial's proxy-trained weights, where the trial kept them),
DIR/model.onnx (the deployed, re-parameterized form at the deployment resolution, checked against torch
with onnxruntime) and DIR/README.md (genome, latency measured on ort-cpu beside the LUT prediction and the
search device's figure, proxy accuracy, dataset).

Examples:
  python -m nas.export --study repnas-iphone12-fashion-mnist --trial 12 --out exported/t12
  python -m nas.export --study repnas-iphone12-fashion-mnist --pareto --out exported/
  python -m nas.export --storage postgresql://nas:pw@db/nas --study s --trial 3 --out m3 --name phone_net

Then, in Python:
  import search_space, timm
  model = search_space.create_model_from_dir("exported/t12")
  # or: search_space.register_dir("exported/t12"); timm.create_model("repnas_<name>", pretrained=True)
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nas.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", default=None,
                   help="Optuna storage: SQLite file or SQLAlchemy URL (default ./repnas-search.db)")
    p.add_argument("--study", required=True, help="study name (as given to or printed by nas.search)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial number to export")
    which.add_argument("--pareto", action="store_true", help="export every trial of the Pareto front, one folder each")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (with --pareto: the parent folder)")
    p.add_argument("--name", default=None,
                   help="model name; the timm name is repnas_<name> (default <study>_trial<N>)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out (only once the export succeeded)")
    p.add_argument("--coreml", action="store_true", help="also write model.mlpackage (needs coremltools)")
    p.add_argument("--no-weights", action="store_true", help="export the architecture without the proxy weights")
    p.add_argument("--lut-db", default=None, help="latency LUT for the card's ort-cpu prediction "
                                                  "(default ./repnas-lut.db)")
    p.add_argument("--runs", type=int, default=30, help="timed onnxruntime runs for the measured latency (default 30)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    from search_space import RepNASError

    from ._export import export_pareto, export_trial, summary_lines
    from ._storage import scrub

    secrets = [u for u in (args.storage, args.lut_db) if u]

    kwargs = dict(storage=args.storage, study=args.study, out=args.out, name=args.name, force=args.force,
                  coreml=args.coreml, weights=not args.no_weights, lut_db=args.lut_db, measure_runs=args.runs)
    try:
        results = export_pareto(**kwargs) if args.pareto else [export_trial(trial=args.trial, **kwargs)]
    except RepNASError as e:
        print(f"error: {scrub(e, secrets)}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable --out, a full disk: the target folder is left as it was
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''} (nothing was written)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the target folder was left as it was", file=sys.stderr)
        return 130
    print("\n".join(summary_lines(results)))
    r = results[0]
    print(f"\nload it: import search_space; model = search_space.create_model_from_dir({str(r.out_dir)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
