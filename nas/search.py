"""python -m nas.search: hardware-aware multi-objective architecture search.

Maximizes proxy accuracy (short training at low resolution, or a zero-cost score) and minimizes the
latency of the deployed network on --device (from the latency LUT at --resolution). Results go to an
Optuna storage (SQLite file by default; PostgreSQL for several workers) and a run folder with the
Pareto front (pareto.csv, pareto.json, pareto.png, report.md, genomes/).

Examples:
  python -m nas.search --device iphone12
  python -m nas.search --device ort-cpu --latency-max 8 --sampler tpe --trials 60
  python -m nas.search --device iphone12 --storage postgresql://nas:pw@db:5432/nas --workers 4

Re-running the same command (same --storage and --study) resumes the study: completed trials are
kept and only the missing ones are run. A worker killed mid-trial leaves a trial that Optuna's
heartbeat marks failed and re-queues once.
"""

from __future__ import annotations

import argparse
import logging
import sys

_logger = logging.getLogger("nas")


def build_parser() -> argparse.ArgumentParser:
    from ._search import PROXIES, SAMPLERS, ZERO_COST_METHODS

    p = argparse.ArgumentParser(prog="python -m nas.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("objectives")
    g.add_argument("--device", default="iphone12",
                   help="latency device: iphone12 (predicted), ort-cpu, torch-cpu, torch-cuda, or an imported remote "
                        "device (default iphone12)")
    g.add_argument("--resolution", type=int, default=224, help="deployment resolution for latency (default 224)")
    g.add_argument("--latency-max", type=float, default=None, metavar="MS",
                   help="hard latency budget in ms (Trial.set_constraint); candidates far over it are not trained")
    g.add_argument("--lut-db", default=None, help="latency LUT database (default ./repnas-lut.db)")
    g = p.add_argument_group("search")
    g.add_argument("--trials", type=int, default=30, help="complete search trials wanted in the study (default 30; "
                   "a rerun only runs the missing ones)")
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop this run after SECONDS")
    g.add_argument("--sampler", choices=SAMPLERS, default="nsga2", help="Optuna sampler (default nsga2)")
    g.add_argument("--population-size", type=int, default=None, help="NSGA-II population (default trials/3, 8..50)")
    g.add_argument("--seed", type=int, default=0, help="sampler and proxy-training seed (default 0)")
    g.add_argument("--no-baselines", action="store_true", help="do not evaluate the seed zoo models")
    g = p.add_argument_group("proxy")
    g.add_argument("--proxy", choices=PROXIES, default="train",
                   help="train: short training at low resolution; zero-cost: a training-free score (default train)")
    g.add_argument("--zero-cost-method", choices=ZERO_COST_METHODS, default="naswot")
    g.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (default), cifar10, cifar100, imagefolder:PATH, synthetic")
    g.add_argument("--data-dir", default=None, help="look for the dataset here first (also $NAS_DATA_DIR)")
    g.add_argument("--epochs", type=int, default=None, help="proxy training epochs (default: the proxy's)")
    g.add_argument("--proxy-resolution", type=int, default=None, help="proxy training resolution (default: the "
                   "proxy's; raised per genome where --proxy-min-map or MobileViT patches need it)")
    g.add_argument("--proxy-min-map", type=int, default=None, metavar="N",
                   help="every stage sees at least an NxN map during proxy training (2: 64 px for stride 32)")
    g.add_argument("--proxy-width", type=float, default=None, metavar="X",
                   help="proxy-only width multiplier (latency is priced on the real genome; weights of a narrower "
                        "proxy are not kept for export)")
    g.add_argument("--proxy-images", type=int, default=None, metavar="N",
                   help="class-stratified training images of the proxy")
    g.add_argument("--train-device", default="auto", help="auto (CUDA when present), cpu, cuda")
    g.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: (cores - 1) / workers, at least 1)")
    g = p.add_argument_group("storage and workers")
    g.add_argument("--storage", default=None,
                   help="Optuna storage: SQLite file or SQLAlchemy URL (default ./repnas-search.db)")
    g.add_argument("--study", default=None, help="study name (default repnas-<device>-<dataset>)")
    g.add_argument("--out", default=None, help="run folder (default runs/<study>)")
    g.add_argument("--workers", type=int, default=1,
                   help="local worker processes (more than one needs a PostgreSQL --storage)")
    g.add_argument("--heartbeat-interval", type=int, default=10, help=argparse.SUPPRESS)
    g.add_argument("--grace-period", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--report-only", action="store_true", help="only rewrite the run folder from the storage")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    from search_space import RepNASError

    from ._search import SearchConfig, run_search, write_report
    from ._storage import _first_line, scrub

    secrets = [u for u in (args.storage, args.lut_db) if u]  # never echoed back, whatever the message

    try:
        config = SearchConfig(
            device=args.device, trials=args.trials, timeout=args.timeout, latency_max=args.latency_max,
            sampler=args.sampler, storage=args.storage, study=args.study, dataset=args.dataset,
            data_dir=args.data_dir, epochs=args.epochs, resolution=args.resolution,
            proxy_resolution=args.proxy_resolution, proxy_width=args.proxy_width, proxy_min_map=args.proxy_min_map,
            proxy_images=args.proxy_images, train_device=args.train_device, seed=args.seed, out=args.out,
            proxy=args.proxy, zero_cost_method=args.zero_cost_method, lut_db=args.lut_db, workers=args.workers,
            baselines=not args.no_baselines, population_size=args.population_size,
            heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period, threads=args.threads,
        )
        result = write_report(config) if args.report_only else run_search(config, progress=not args.no_progress)
    except (RepNASError, ValueError, FileNotFoundError) as e:
        print(f"error: {scrub(e, secrets)}", file=sys.stderr)
        return 2
    except OSError as e:  # the run folder or a storage file cannot be written (permissions, a full disk)
        print(f"error: {scrub(e, secrets)}", file=sys.stderr)
        return 2
    except Exception as e:  # database errors mid-run (a dropped PostgreSQL connection, a locked SQLite file)
        import sqlalchemy.exc

        if not isinstance(e, sqlalchemy.exc.SQLAlchemyError):
            raise
        print(f"error: storage: {_first_line(e, *secrets)}; completed trials are kept, rerun to resume",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed trials are stored and the report covers them; rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    _print_table(config, result)
    return 0


def _print_table(config, result) -> None:
    print(f"\nPareto front of {config.study_name} ({len(result.front)} of {len(result.candidates)} complete "
          f"trials); latency: {result.latency_label}")
    print(f"{'trial':>6} {config.metric[:22]:>22} {'latency ms':>11}  {'source':9} params")
    for c in result.front:
        params = f"{c.params / 1e6:.2f}M" if c.params else "?"
        print(f"{c.number:>6} {c.accuracy:>22.4f} {c.latency_ms:>11.3f}  {c.latency_source:9} {params}")
    if result.baselines:
        from ._search import front_dominates_baselines

        dominated = front_dominates_baselines(result)
        print("seed baselines (same proxy):")
        for b in result.baselines:
            beat = dominated.get(b.name, False)
            same = any(c.latency_resolution == b.latency_resolution for c in result.front)
            verdict = ("dominated by the front" if beat else "not dominated") if same else \
                f"not comparable (priced at {b.latency_resolution}px)"
            print(f"{b.name:>14} {b.accuracy:>14.4f} {b.latency_ms:>11.3f}  {b.latency_source:9} {verdict}")
    print(f"run folder: {config.out_dir} (report.md, pareto.csv/json/png, genomes/)")


if __name__ == "__main__":
    sys.exit(main())
