"""python -m nas.search: hardware-aware multi-objective architecture search.

Maximizes a proxy score (short training at low resolution, ranked by validation accuracy or loss, or a
zero-cost score) and minimizes the latency of the deployed network on --device (from the latency LUT at
--resolution). Every candidate is
first trained on the cheapest rung's images; the top 1/eta of each rung (non-dominated rank, then
crowding distance) is retrained on eta times more, and the top rung averages --top-seeds seeds
(successive halving). Results go to an Optuna storage (SQLite file by default; PostgreSQL for several
workers) and a run folder with the Pareto front at the top rung (pareto.csv, pareto.json, pareto.png,
report.md, genomes/).

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
    from ._config import PROXIES, PROXY_SCORES, SAMPLERS, ZERO_COST_METHODS

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
    g.add_argument("--trials", type=int, default=None, help="candidates scored at the cheapest rung (default 31 on "
                   "CPU, 200 with CUDA; a rerun only runs the missing ones)")
    g.add_argument("--eta", type=int, default=3, help="successive-halving reduction factor: the top 1/eta of a rung "
                   "is promoted (default 3)")
    g.add_argument("--rungs", type=_int_list, default=None, metavar="N,N,...",
                   help="training images of each rung, cheapest first (default: the top rung's images divided by "
                        "eta down to 600: 667,2000 on CPU, 1333,4000,12000,36000 with CUDA)")
    g.add_argument("--top-seeds", type=int, default=2, help="seeds averaged at the top rung (>= 2, default 2)")
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop this run after SECONDS")
    g.add_argument("--sampler", choices=SAMPLERS, default="nsga2", help="Optuna sampler (default nsga2)")
    g.add_argument("--population-size", type=int, default=None, help="NSGA-II population (default trials/3, 8..50)")
    g.add_argument("--seed", type=int, default=0, help="sampler and proxy-training seed (default 0)")
    g.add_argument("--no-baselines", action="store_true", help="do not evaluate the seed zoo models")
    g = p.add_argument_group("proxy")
    g.add_argument("--proxy", choices=PROXIES, default="train",
                   help="train: short training at low resolution; zero-cost: a training-free score (default train)")
    g.add_argument("--proxy-score", choices=PROXY_SCORES, default=None,
                   help="what ranks a trained candidate: its validation accuracy, or its validation loss (the "
                        "objective is then minus the loss; the accuracy is reported beside it; a candidate stopped "
                        "early as hopeless is scored as it stopped). Default accuracy: at the default rungs the "
                        "loss ranked no closer to a longer reference training (BENCHMARKS.md, proxy fidelity)")
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
                   help="class-stratified training images of the top rung (the lower rungs divide it by eta)")
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

    from ._config import SearchConfig
    from ._search import run_search, write_report
    from ._storage import first_error_line, scrub

    secrets = [u for u in (args.storage, args.lut_db) if u]  # never echoed back, whatever the message

    try:
        config = SearchConfig(
            device=args.device, trials=args.trials, timeout=args.timeout, latency_max=args.latency_max,
            sampler=args.sampler, storage=args.storage, study=args.study, dataset=args.dataset,
            data_dir=args.data_dir, epochs=args.epochs, resolution=args.resolution,
            proxy_resolution=args.proxy_resolution, proxy_width=args.proxy_width, proxy_min_map=args.proxy_min_map,
            proxy_images=args.proxy_images, rungs=args.rungs, eta=args.eta, top_seeds=args.top_seeds,
            train_device=args.train_device, seed=args.seed, out=args.out,
            proxy=args.proxy, proxy_score=args.proxy_score, zero_cost_method=args.zero_cost_method,
            lut_db=args.lut_db, workers=args.workers,
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
        print(f"error: storage: {first_error_line(e, *secrets)}; completed trials are kept, rerun to resume",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed trials are stored and the report covers them; rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    _print_table(config, result)
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (training images per rung), got "
                                         f"{text!r}") from None


def _print_table(config, result) -> None:
    rung = result.front[0].rung if result.front else 0
    acc, metric = result.scoring.accuracy_column, result.scoring.metric
    print(f"\nPareto front of {config.study_name} at rung {rung} ({len(result.front)} of {len(result.candidates)} "
          f"candidates); latency: {result.latency_label}")
    acc_head = f" {'accuracy mean +- sd':>21}" if acc else ""
    print(f"{'trial':>6} {(metric[:27] + ' mean +- sd'):>38}{acc_head} {'seeds':>5} {'latency ms':>11}  "
          f"{'source':9} params")
    for c in result.front:
        params = f"{c.params / 1e6:.2f}M" if c.params else "?"
        error = f"  latency {c.latency_error}" if c.latency_error else ""
        shown_acc = f" {c.shown_accuracy:>21}" if acc else ""
        print(f"{c.number:>6} {c.shown_score:>38}{shown_acc} {c.seeds:>5} {c.latency_ms:>11.3f}  "
              f"{c.latency_source:9} {params}{error}")
    if result.baselines:
        print("seed baselines (same proxy and rungs, each compared with the candidates at its highest rung):")
        for b in result.baselines:
            v = result.verdicts.get(b.name)
            verdict = {"dominated": "dominated by a candidate at its rung", "tie": "tie within noise",
                       "not dominated": "not dominated"}.get(v.kind if v else "", v.text() if v else "?")
            shown_acc = f" {b.shown_accuracy:>21}" if acc else ""
            print(f"{b.name:>14} {b.shown_score:>30}{shown_acc} {'r' + str(b.rung):>5} {b.latency_ms:>11.3f}  "
                  f"{b.latency_source:9} {verdict}")
    print(f"run folder: {config.out_dir} (report.md, pareto.csv/json/png, genomes/)")


if __name__ == "__main__":
    sys.exit(main())
