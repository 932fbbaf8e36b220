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
from latency_lut import CALIBRATION_GOALS as GOALS  # noqa: E402
from latency_lut import CostModel, load_iphone12_cost_model  # noqa: E402
from latency_lut import calibrate_iphone12 as calibrate  # noqa: E402
from scripts._common import machine, update_section  # noqa: E402


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def _table(lofo: dict, *, chosen: bool) -> list[str]:
    head = ("| family left out | models | rows | median error % | bias % | median error % at scale 1 | "
            "MAPE % | Spearman | goal |")
    sep = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    if chosen:
        head += " chosen in fold |"
        sep += " --- |"
    goals = (GOALS["min_models"], GOALS["median_ape_pct"], GOALS["abs_bias_pct"])
    lines = [head, sep]
    for f in lofo["families"]:
        if f["n_models"] < goals[0]:
            verdict = "too few models"
        else:
            verdict = "met" if f["median_ape_pct"] <= goals[1] and abs(f["bias_pct"]) <= goals[2] else "**NOT met**"
        line = (f"| {f['family']} | {f['n_models']} | {f['n_rows']} | {_fmt(f.get('median_ape_pct'), '.1f')} | "
                f"{_fmt(f.get('bias_pct'), '+.1f')} | {_fmt(f.get('consensus_median_ape_pct'), '.1f')} | "
                f"{_fmt(f['mape_pct'], '.1f')} | {_fmt(f['spearman'], '.2f')} | {verdict} |")
        lines.append(line + (f" {f.get('chosen')} |" if chosen else ""))
    lines.append(f"| **all architectures** | | | **{_fmt(lofo.get('overall_median_ape_pct'), '.1f')}** | | | "
                 f"{_fmt(lofo['mean_mape_pct'], '.1f')} (mean of families) | "
                 f"**{_fmt(lofo.get('overall_spearman'), '.3f')}** | |" + (" |" if chosen else ""))
    return lines


def _goal_lines(provenance: dict) -> list[str]:
    g = provenance.get("goals")
    if not g:
        return []
    judged = {f: v for f, v in g["families"].items() if v["meets"] is not None}
    failed = [f"{f} ({v['median_ape_pct']:.0f}%, bias {v['bias_pct']:+.0f}%)" for f, v in judged.items()
              if not v["meets"]]
    return [f"Goals (nested LOFO): median error <= {GOALS['median_ape_pct']:.0f}% and |bias| <= "
            f"{GOALS['abs_bias_pct']:.0f}% on every family with at least {GOALS['min_models']} models: "
            f"{len(judged) - len(failed)} of {len(judged)} met" + (f"; NOT met: {', '.join(failed)}" if failed else "")
            + f". Spearman over all architectures >= {GOALS['spearman']}: {g['spearman']:.3f}, "
            f"{'met' if g['spearman_meets'] else 'NOT met'}. Families with fewer models are reported, not judged."]


def _effects_lines(provenance: dict) -> list[str]:
    eff = provenance.get("block_effects")
    if not eff:
        return []
    lines = ["| block term | price (ms per unit) | families with it | median / max share of predicted time | "
             "LOFO mean MAPE % with / without it |", "| --- | ---: | --- | ---: | ---: |"]
    for name, e in eff.items():
        fams = f"{len(e['families_with_it'])}" + ("" if e["identifiable"] else " (one family: not identifiable)")
        lines.append(f"| `{name}` | {e['coefficient']:.3g} | {fams} | {e['median_share_pct']:.1f}% / "
                     f"{e['max_share_pct']:.1f}% | {e['lofo_mean_mape_pct_with']:.1f} / "
                     f"{e['lofo_mean_mape_pct_without']:.1f} |")
    return lines


def _scales_lines(provenance: dict) -> list[str]:
    scales = provenance.get("source_scales")
    if not scales:
        return []
    counts: dict[str, int] = {}
    for r in provenance.get("rows_used", []):
        counts[r.get("source", "")] = counts.get(r.get("source", ""), 0) + 1
    return ["| source | rows | fitted scale |", "| --- | ---: | ---: |",
            *(f"| {k} | {counts.get(k, 0)} | {v:.3f} |" for k, v in sorted(scales.items(), key=lambda kv: -kv[1]))]


def lofo_markdown(provenance: dict) -> str:
    """The validation tables of a fitted model's provenance, as markdown."""
    sel = provenance.get("model_selection", {})
    nested = provenance.get("lofo_kind") == "nested"
    lines = [f"Model: `{sel.get('chosen', '?')}`. Selection rule: {sel.get('rule', 'n/a')}.", "",
             "Errors are against the published rows corrected by their source's fitted scale (from the same "
             "fold); \"at scale 1\" takes every published row at face value. Bias > 0: predicted too slow.", ""]
    if nested:
        lines += ["Nested leave-one-family-out (selection repeated inside every fold; the error to quote):", ""]
        lines += _table(provenance["lofo"], chosen=True)
        lines += ["", *_goal_lines(provenance)]
        lines += ["", "Plain leave-one-family-out of the shipped candidate (optimistic: it was selected by this "
                      "error):", ""]
    else:
        lines += ["Leave-one-family-out:", ""]
    unnested = provenance.get("lofo_unnested", provenance["lofo"])
    lines += _table(unnested, chosen=False)
    if not nested:
        lines += ["", *_goal_lines(provenance)]
    if provenance.get("block_effects"):
        lines += ["", "What the calibration measured for each block term of the shipped model (shares over the "
                      "calibration models that have the term; LOFO: plain, shipped specification):", "",
                  *_effects_lines(provenance)]
    if provenance.get("error_by_block"):
        lines += ["", "Nested LOFO error by block type (the architectures that contain each block):", "",
                  "| block term | architectures | median error % | bias % |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| `{k}` | {v['n_models']} | {_fmt(v['median_ape_pct'], '.1f')} | {_fmt(v['bias_pct'], '+.1f')} |"
                  for k, v in provenance["error_by_block"].items()]
    if provenance.get("source_scales"):
        lines += ["", "Per-source scales (published = scale x prediction; the `[A]` rows average 1, row-weighted, "
                      "in log):", "",
                  *_scales_lines(provenance)]
    if len(sel.get("candidates", [])) > 1:
        lines += ["", "| candidate | LOFO mean MAPE % |", "| --- | ---: |"]
        lines += [f"| {c['name']} | {_fmt(c.get('lofo_mean_mape_pct'), '.2f')} |" for c in sel["candidates"]]
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


def benchmark_section(provenance: dict) -> str:
    """The BENCHMARKS.md section of a calibration: the command, the data, the validation tables and the goals."""
    data = provenance.get("rows_used", [])
    return "\n".join([
        f"## iphone12 cost model: {provenance.get('lofo_kind', 'plain')} leave-one-family-out (PREDICTED device)", "",
        "Command: `python scripts/calibrate_iphone12.py` (refits `latency_lut/data/iphone12_costmodel.json` and "
        "writes this section; `--report-only` re-renders it from the shipped JSON)  ",
        f"Calibration data: `latency_lut/data/iphone12_published_latency.csv`, {len(data)} rows over "
        f"{len({r['arch'] for r in data})} architectures, {len({r['family'] for r in data})} families and "
        f"{len({r.get('source') for r in data})} sources. Calibrated {provenance.get('created')}; machine for "
        f"feature extraction: {machine()}.", "",
        lofo_markdown(provenance),
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", type=Path, default=None, help="calibration CSV (default: the shipped one)")
    p.add_argument("--out", type=Path, default=None, help="output JSON (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    p.add_argument("--no-zoo", action="store_true", help="do not price the seed zoo at the end")
    p.add_argument("--report-only", action="store_true",
                   help="refit nothing: print (and write into BENCHMARKS.md) the tables of the shipped model")
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    model = load_iphone12_cost_model(args.out) if args.report_only else calibrate(args.csv, args.out,
                                                                                  progress=not args.quiet)
    t1 = time.perf_counter()
    section = benchmark_section(dict(model.provenance))
    print(section)
    if not args.no_write and args.out is None:  # BENCHMARKS.md describes the shipped model only
        update_section("bench_lut_iphone12", section)
    if not args.no_zoo:
        print()
        print(zoo_markdown(model))
    print(f"\ncalibration {t1 - t0:.0f} s, zoo {time.perf_counter() - t1:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
