"""Calibrate the predicted ``iphone12`` device: price the published models, fit, validate, write the JSON.

    python scripts/calibrate_iphone12.py [--csv PATH] [--out PATH] [--quiet]

Prices every model of the calibration CSV that timm can build (re-parameterized ONNX graph features),
fits the non-negative per-operator cost model on all of them, runs leave-one-family-out validation and
writes ``latency_lut/data/iphone12_costmodel.json`` (or ``--out``). Prints the validation table
(markdown). Takes about two minutes on a laptop CPU; most of it is building and exporting the
largest models (ViT-L/14, MobileCLIP-S4).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latency_lut._iphone12 import calibrate  # noqa: E402


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def lofo_markdown(provenance: dict) -> str:
    """The leave-one-family-out table of a fitted model's provenance, as markdown."""
    lofo = provenance["lofo"]
    lines = [
        "| family left out | models | rows | MAPE % | Spearman |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for f in lofo["families"]:
        lines.append(f"| {f['family']} | {f['n_models']} | {f['n_rows']} | {_fmt(f['mape_pct'], '.1f')} | "
                     f"{_fmt(f['spearman'], '.2f')} |")
    ins = provenance.get("in_sample", {})
    lines += [
        "",
        f"Leave-one-family-out MAPE: mean {_fmt(lofo['mean_mape_pct'], '.1f')}%, median "
        f"{_fmt(lofo['median_mape_pct'], '.1f')}%, max {_fmt(lofo['max_mape_pct'], '.1f')}%; mean Spearman "
        f"{_fmt(lofo['mean_spearman'], '.2f')} (families with >= 3 models). In-sample MAPE "
        f"{_fmt(ins.get('mape_pct'), '.1f')}% over {ins.get('n_models')} architectures.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", type=Path, default=None, help="calibration CSV (default: the shipped one)")
    p.add_argument("--out", type=Path, default=None, help="output JSON (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    model = calibrate(args.csv, args.out, progress=not args.quiet)
    print(lofo_markdown(dict(model.provenance)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
