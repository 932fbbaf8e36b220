"""Calibrate the predicted ``iphone12`` device: price the published models, select, fit, validate, write the JSON.

    python scripts/calibrate_iphone12.py [--csv PATH] [--out PATH] [--quiet] [--no-zoo]

Prices every model of the calibration CSV that timm can build (re-parameterized ONNX graph features),
selects the model among ``latency_lut._iphone12.CANDIDATES`` by leave-one-family-out (LOFO) error, fits it
on all of them, validates the whole procedure by nested LOFO and writes
``latency_lut/data/iphone12_costmodel.json`` (or ``--out``). Prints the validation tables (markdown) and the
predictions for the RepNAS seed zoo next to the published latencies of the same architectures. Takes
about two to four minutes on a laptop CPU; most of it is building and exporting the largest models
(ViT-L/14, MobileCLIP-S4).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latency_lut import CostModel  # noqa: E402
from latency_lut import calibrate_iphone12 as calibrate  # noqa: E402


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def _table(lofo: dict, *, chosen: bool) -> list[str]:
    head = "| family left out | models | rows | MAPE % (all rows) | MAPE % (best-quality rows) | Spearman |"
    sep = "| --- | ---: | ---: | ---: | ---: | ---: |"
    if chosen:
        head += " chosen in fold |"
        sep += " --- |"
    lines = [head, sep]
    for f in lofo["families"]:
        line = (f"| {f['family']} | {f['n_models']} | {f['n_rows']} | {_fmt(f['mape_pct'], '.1f')} | "
                f"{_fmt(f.get('mape_best_quality_pct'), '.1f')} | {_fmt(f['spearman'], '.2f')} |")
        lines.append(line + (f" {f.get('chosen')} |" if chosen else ""))
    lines.append(f"| **mean** | | | **{_fmt(lofo['mean_mape_pct'], '.1f')}** | "
                 f"{_fmt(lofo.get('mean_mape_best_quality_pct'), '.1f')} | {_fmt(lofo['mean_spearman'], '.2f')} |"
                 + (" |" if chosen else ""))
    lines.append(f"| max | | | {_fmt(lofo['max_mape_pct'], '.1f')} | | |" + (" |" if chosen else ""))
    return lines


def lofo_markdown(provenance: dict) -> str:
    """The validation tables of a fitted model's provenance, as markdown."""
    sel = provenance.get("model_selection", {})
    nested = provenance.get("lofo_kind") == "nested"
    lines = [f"Model: `{sel.get('chosen', '?')}`. Selection rule: {sel.get('rule', 'n/a')}.", ""]
    if nested:
        lines += ["Nested leave-one-family-out (selection repeated inside every fold; the error to quote):", ""]
        lines += _table(provenance["lofo"], chosen=True)
        lines += ["", "Plain leave-one-family-out of the shipped candidate (optimistic: it was selected by this "
                      "error):", ""]
    else:
        lines += ["Leave-one-family-out:", ""]
    unnested = provenance.get("lofo_unnested", provenance["lofo"])
    lines += _table(unnested, chosen=False)
    if len(sel.get("candidates", [])) > 1:
        lines += ["", "| candidate | LOFO mean MAPE % |", "| --- | ---: |"]
        lines += [f"| {c['name']} | {_fmt(c.get('lofo_mean_mape_pct'), '.2f')} |" for c in sel["candidates"]]
    conflicts = []
    for key, label in (("lofo", "nested"), ("lofo_unnested", "plain")):
        for f in provenance.get(key, {}).get("families", []):
            for arch, m in f["models"].items():
                ys = [r["published_ms"] for r in m.get("rows", [])]
                if ys and max(ys) > 1.2 * min(ys):
                    rows = ", ".join(f"{r['published_ms']:g} [{r['quality']}]: {r['ape_pct']:.1f}%" for r in m["rows"])
                    conflicts.append(f"- {arch} ({label} LOFO) predicted {m['predicted_ms']:.3f} ms; per published "
                                     f"row: {rows}")
    if conflicts:
        lines += ["", "Architectures whose published rows disagree by more than 20%:", "", *conflicts]
    ins = provenance.get("in_sample", {})
    lines += ["", f"In-sample MAPE {_fmt(ins.get('mape_pct'), '.1f')}% over {ins.get('n_models')} architectures "
                  f"({ins.get('n_rows')} rows), Spearman {_fmt(ins.get('spearman'), '.3f')}."]
    return "\n".join(lines)


def zoo_markdown(model: CostModel) -> str:
    """Predictions for the RepNAS seed zoo, next to the published latency of the same architecture."""
    import torch

    from latency_lut import graph_features
    from search_space import build_model, zoo

    published: dict[str, list[float]] = {}
    for r in model.provenance.get("rows_used", []):
        published.setdefault(r["arch"], []).append(r["latency_ms"])
    lines = ["| zoo genome | resolution | predicted ms | published ms (same architecture, calibration rows) |",
             "| --- | ---: | ---: | --- |"]
    for name, genome in zoo.items():
        torch.manual_seed(0)
        ms = model.predict(graph_features(build_model(genome), (3, genome.resolution, genome.resolution)))
        pub = published.get(f"{name}@{genome.resolution}")
        ref = (f"{'/'.join(f'{y:g}' for y in pub)} (mean {sum(pub) / len(pub):.3f}; in the fit)" if pub
               else "none in the calibration CSV")
        lines.append(f"| {name} | {genome.resolution} | {ms:.3f} | {ref} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", type=Path, default=None, help="calibration CSV (default: the shipped one)")
    p.add_argument("--out", type=Path, default=None, help="output JSON (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    p.add_argument("--no-zoo", action="store_true", help="do not price the seed zoo at the end")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    model = calibrate(args.csv, args.out, progress=not args.quiet)
    t1 = time.perf_counter()
    print(lofo_markdown(dict(model.provenance)))
    if not args.no_zoo:
        print()
        print(zoo_markdown(model))
    print(f"\ncalibration {t1 - t0:.0f} s, zoo {time.perf_counter() - t1:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
