"""LUT accuracy: ort-cpu validate figures and the iphone12 leave-one-family-out table, into BENCHMARKS.md.

    python scripts/bench_lut.py [--n 30] [--resolution 224] [--threads 1] [--skip-iphone12] [--no-write]

The ort-cpu part samples N random genomes, prices each from a fresh LUT (built on demand in a
temporary SQLite file) and measures each whole deployed network end to end on onnxruntime CPU. The
LUT sums are compared with wall time and, since onnxruntime runs on the calling thread with one
thread, with the thread's CPU time (which other load on a shared machine cannot inflate). With
--calibration-genomes N a network correction is fitted first on N genomes of another seed (none of
them validated) and corrected figures are reported beside the plain ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latency_lut import validate_lut  # noqa: E402
from scripts._common import machine, update_section  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-iphone12", action="store_true")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--calibration-genomes", type=int, default=0,
                   help="also fit a network correction on this many calibration genomes (another seed) and report "
                        "corrected figures (default 0: plain LUT sums)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from latency_lut import check_threads
    from search_space import RepNASError

    try:
        check_threads("ort-cpu", args.threads)  # LUT sums are only valid at one thread (see latency_lut build)
    except RepNASError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rep = validate_lut("ort-cpu", n=args.n, seed=args.seed, resolution=args.resolution,
                           db=Path(tmp) / "lut.db", threads=args.threads,
                           calibration_genomes=args.calibration_genomes)
    load_after = os.getloadavg()
    print(rep.summary())

    def row(name: str, a: dict | None) -> str:
        if a is None:
            return f"| {name} | n/a | n/a | n/a | n/a | n/a | n/a |"
        return (f"| {name} | {a['within_10']:.0%} | {a['within_5']:.0%} | {a['mape']:.1f}% | {a['bias']:+.1f}% | "
                f"{a['spearman']:.3f} | {'met' if a['within_10'] >= 0.9 else 'NOT met'} |")

    corr = rep.correction
    contention = rep.contention
    lines = [
        "## LUT validation: ort-cpu (measured)",
        "",
        f"Command: `python scripts/bench_lut.py --n {args.n} --seed {args.seed} --resolution {args.resolution} "
        f"--threads {args.threads}{' --skip-iphone12' if args.skip_iphone12 else ''}"
        f"{f' --calibration-genomes {args.calibration_genomes}' if args.calibration_genomes else ''}` "
        + ("" if args.calibration_genomes else
           f"(same figures as `python -m latency_lut validate --device ort-cpu --n {args.n}`)") + "  ",
        f"Machine: {machine()}  ",
        f"{args.n} random genomes of the default `SearchSpace` at {args.resolution}x{args.resolution}, batch 1, "
        f"{args.threads} thread(s). LUT sum = per-block LUT medians (each block timed alone, every cache level "
        "evicted and its input touched before every call, cold call overhead removed per block, warm overhead "
        "added once; with 1 thread the medians are of the calling thread's CPU time)"
        + (f"; corrected = LUT sum through the network correction `a*sum + b*n_units + c` fitted on "
           f"{corr.n_genomes} calibration genomes of another seed" if corr else "")
        + "; measured = whole deployed network end to end, median of 30 runs.  ",
        f"Load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f}"
        + (f"; median wall/CPU time of the networks: {contention:.2f}" if contention is not None else ""),
        "",
        "| prediction | within +-10% | within +-5% | MAPE | mean error | Spearman | goal (>= 90% within +-10%) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *([row("LUT sum + correction, vs wall", rep.agreement()),
           row("LUT sum (uncorrected), vs wall", rep.agreement(corrected=False)),
           row("LUT sum + correction, vs thread CPU", rep.agreement(clock="cpu")),
           row("LUT sum (uncorrected), vs thread CPU", rep.agreement(corrected=False, clock="cpu"))] if corr else
          [row("LUT sum, vs wall", rep.agreement()), row("LUT sum, vs thread CPU", rep.agreement(clock="cpu"))]),
        "",
        f"Network correction: {corr.describe()}." if corr else "Network correction: none (plain LUT sums).",
    ]
    print("\n".join(lines))
    if not args.no_write:
        update_section("bench_lut_ortcpu", "\n".join(lines))
    if not args.skip_iphone12:
        from latency_lut import load_iphone12_cost_model
        from scripts.calibrate_iphone12 import benchmark_section

        section = benchmark_section(dict(load_iphone12_cost_model().provenance))
        print(section)
        if not args.no_write:
            update_section("bench_lut_iphone12", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
