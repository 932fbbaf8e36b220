"""Search benchmark: multi- vs single-fidelity search, sampler hypervolume, proxy rank fidelity, into BENCHMARKS.md.

    python scripts/bench_search.py --default-run [--report-only]
    python scripts/bench_search.py --mf [--budget-minutes 20] [--seeds 3] [--arms mf-nsga2 sf-nsga2 sf-random]
                                   [--max-minutes M] [--report-only]
    python scripts/bench_search.py [--trials 20] [--seeds 3] [--samplers nsga2 tpe random]
                                   [--genomes 12] [--long-factor 5] [--skip-hv] [--skip-tau] [--no-write]

``--default-run``: times the plain ``python -m nas.search --device iphone12`` in a fresh folder (a subprocess,
as a user runs it), appends the wall time and the per-rung counts and seconds to
``benchmarks/search/default_runs.jsonl`` and writes the section (goal: 20 minutes, > 30 candidates at rung 0).

0. ``--mf``: at equal compute (the same ``--timeout`` per study on this machine), the multi-fidelity search
   (successive halving over the default rungs, NSGA-II) against single-fidelity NSGA-II and random sampling,
   which train every candidate at the top rung's recipe (its images, two seeds averaged). Every front is so
   measured at top-rung fidelity, and its 2-D hypervolume is taken against chance accuracy and
   ``--hv-latency-ref`` ms after every front is retrained with the top rung's recipe on unseen seeds and an
   unseen hold-out split (a front's own figures are the best of noisy draws). One JSON line per (arm, seed)
   goes to ``benchmarks/search/mf.jsonl`` as it finishes (a rerun skips what is recorded; ``--max-minutes``
   stops after the study in progress).

1. Hypervolume: for each sampler and seed, a fresh study of --trials complete trials on Fashion-MNIST
   with the iphone12 LUT (the default `python -m nas.search` objective), then the 2-D hypervolume of its
   front (proxy accuracy up, latency down) against a fixed reference point (accuracy 0.1 = chance,
   latency = --hv-latency-ref ms). Samplers are compared at equal trial counts.
2. Proxy fidelity: on the 7 zoo models plus random genomes of the space (--genomes in all), Kendall tau
   between the default proxy accuracy and the accuracy after --long-factor x longer training (same data,
   same seed), beside the zero-cost scores (NASWOT, synflow) and the plain parameter-count and MACs
   baselines.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts._common import machine, update_section  # noqa: E402

_logger = logging.getLogger("bench_search")


def hypervolume_2d(points, ref_acc: float, ref_lat: float) -> float:
    """Area dominated by ``points`` (accuracy up, latency down) and bounded by the reference point."""
    pts = sorted((lat, acc) for acc, lat in points if acc > ref_acc and lat < ref_lat)
    hv, best_acc = 0.0, ref_acc
    # sweep from the slowest to the fastest: each point adds the strip its accuracy lifts above what is faster
    front = []
    for lat, acc in pts:
        if not front or acc > front[-1][1]:
            front.append((lat, acc))
    for i, (lat, acc) in enumerate(front):
        nxt = front[i + 1][0] if i + 1 < len(front) else ref_lat
        best_acc = max(best_acc, acc)
        hv += (nxt - lat) * (best_acc - ref_acc)
    return hv


def run_hv(args) -> list[str]:
    import optuna

    from nas import SearchConfig
    from nas._config import ACCURACY_SCORE
    from nas._storage import open_storage
    from nas._worker import run_worker

    rows = []
    all_pts: list = []
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in args.samplers:
            secs = []
            for seed in range(args.seeds):
                cfg = SearchConfig(device=args.device, trials=args.trials, sampler=sampler, seed=seed,
                                   storage=f"{tmp}/{sampler}-{seed}.db", study="bench",
                                   out=f"{tmp}/run-{sampler}-{seed}",
                                   dataset=args.dataset, lut_db=args.lut_db, baselines=False, epochs=args.epochs,
                                   proxy=args.hv_proxy,  # the hypervolume of raw values: accuracy or a score
                                   proxy_score=ACCURACY_SCORE if args.hv_proxy == "train" else None)
                t0 = time.perf_counter()
                run_worker(cfg, progress=False)
                secs.append(time.perf_counter() - t0)
                st = optuna.load_study(study_name="bench", storage=open_storage(cfg.storage, heartbeat_interval=None))
                pts = [tuple(t.values) for t in st.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
                all_pts.append(pts)
                _logger.info("%s seed %d: %d trials, %.0f s", sampler, seed, len(pts), secs[-1])
            rows.append((sampler, all_pts[-args.seeds:], float(np.mean(secs))))
    # one reference point for every study: chance accuracy, or (zero-cost scores) just below the lowest seen
    ref_score = 0.1 if args.hv_proxy == "train" else min(a for pts in all_pts for a, _ in pts) - 1.0
    rows = [(s, [hypervolume_2d(p, ref_score, args.hv_latency_ref) for p in pts], sec) for s, pts, sec in rows]
    base = dict((s, np.mean(h)) for s, h, _ in rows).get("random")
    lines = [
        f"## Search: sampler hypervolume at equal trials ({args.hv_proxy} proxy)",
        "",
        f"Command: `python scripts/bench_search.py --trials {args.trials} --seeds {args.seeds} --samplers "
        f"{' '.join(args.samplers)} --hv-proxy {args.hv_proxy} --skip-tau"
        + (f" --epochs {args.epochs}" if args.epochs else "") + "`  ",
        f"Machine: {machine()}  ",
        f"Objective: `python -m nas.search --proxy {args.hv_proxy}` on {args.dataset}, latency on {args.device} at "
        f"224 (PREDICTED for iphone12). Hypervolume reference: score {ref_score} "
        f"({'chance accuracy' if args.hv_proxy == 'train' else 'below every NASWOT score seen'}), "
        f"latency {args.hv_latency_ref} ms.",
        "",
        "| sampler | hypervolume per seed | mean | vs random | mean minutes per study |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s, h, sec in rows:
        rel = f"{np.mean(h) / base - 1:+.1%}" if base else "n/a"
        lines.append(f"| {s} | {', '.join(f'{v:.4f}' for v in h)} | {np.mean(h):.4f} | {rel} | {sec / 60:.1f} |")
    spread = ", ".join(f"{s} {(max(h) - min(h)) / base:.1%}" if base else s for s, h, _ in rows)
    lines += ["", f"Seed-to-seed spread (max - min, relative to random's mean): {spread}. A difference of the means "
              "smaller than these spreads is not significant at this number of seeds."]
    return lines


MF_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "search" / "mf.jsonl"
ARMS = {"mf-nsga2": ("nsga2", "multi"), "sf-nsga2": ("nsga2", "single"), "sf-random": ("random", "single")}
MF_GOAL = 0.10
"""Goal: multi-fidelity hypervolume >= single-fidelity NSGA-II + 10%, outside the seed spread."""
RESCORE_SEEDS = (1000, 1001)
"""Proxy seeds no search uses: every arm's front is retrained on them at the top rung's recipe."""
RESCORE_SPLIT_SEED = 1000
"""Hold-out split of the retraining (a study's data split follows its seed, so study seed 0 would otherwise be
retrained on the very images its front was picked on)."""
CHANCE = 0.1
"""The hypervolume's accuracy reference: chance on the 10 classes of Fashion-MNIST."""


def _mf_config(args, arm: str, seed: int, tmp: str):
    from nas import SearchConfig

    sampler, fidelity = ARMS[arm]
    top = SearchConfig().for_train_device("cpu").rungs[-1]
    # the budget is the timeout, so trials is only a ceiling; NSGA-II keeps the default search's population (one
    # sized from the ceiling would never finish its random first generation within the budget)
    return SearchConfig(device=args.device, dataset=args.dataset, lut_db=args.lut_db, sampler=sampler, seed=seed,
                        trials=100_000, population_size=_mf_population(), timeout=60 * args.budget_minutes,
                        baselines=False, threads=1,
                        storage=f"{tmp}/{arm}-{seed}.db", study="bench", out=f"{tmp}/run-{arm}-{seed}",
                        rungs=None if fidelity == "multi" else (top,), train_device="cpu").for_train_device("cpu")


def rescore(cfg, front, data) -> list[list[float]]:
    """``[accuracy, latency]`` of each front member retrained with the top rung's recipe on fresh seeds.

    A front is the best of what its search saw, so its own accuracies are biased upwards by the proxy's noise,
    the more so the more candidates a search saw at that fidelity; retraining every arm's front with the same
    unseen seeds measures all of them alike. A retraining that fails scores chance accuracy.
    """
    from nas import ProxyTrainingError, train_proxy

    proxy = cfg.proxy_config()
    out = []
    for c in front:
        accs = []
        for s in RESCORE_SEEDS:
            try:
                accs.append(train_proxy(c.genome, data, config=proxy, seed=s).accuracy)
            except ProxyTrainingError as e:
                _logger.warning("%s seed %d: %s (scored as chance)", c.label, s, e)
                accs.append(CHANCE)
        out.append([float(np.mean(accs)), c.latency_ms])
    return out


def run_mf_one(args, arm: str, seed: int) -> dict:
    """One study of ``arm`` for ``--budget-minutes``; its top-rung front (as searched and rescored), hypervolumes
    and counts."""
    from nas import load_dataset
    from nas._search import collect, run_search

    with tempfile.TemporaryDirectory() as tmp:
        cfg = _mf_config(args, arm, seed, tmp)
        t0 = time.perf_counter()
        run_search(cfg, progress=False)
        seconds = time.perf_counter() - t0
        got = collect(cfg)
    front = got.front()
    top = max(got.by_rung) if got.by_rung else 0
    pts = [(c.accuracy, c.latency_ms) for c in front]
    t1 = time.perf_counter()
    fresh = rescore(cfg, front, load_dataset(args.dataset, seed=RESCORE_SPLIT_SEED))
    return {"arm": arm, "seed": seed, "budget_minutes": args.budget_minutes, "population": cfg.population,
            "seconds": round(seconds, 1),
            "front": [[a, lat] for a, lat in pts], "front_rung": front[0].rung if front else None,
            "hypervolume": hypervolume_2d(pts, CHANCE, args.hv_latency_ref),
            "rescored_front": fresh, "rescore_seeds": list(RESCORE_SEEDS), "rescore_split_seed": RESCORE_SPLIT_SEED,
            "rescored_hypervolume": hypervolume_2d([tuple(p) for p in fresh], CHANCE, args.hv_latency_ref),
            "rescore_seconds": round(time.perf_counter() - t1, 1), "hv_latency_ref": args.hv_latency_ref,
            "per_rung": {str(r): len(v) for r, v in sorted(got.by_rung.items())}, "top_rung": top,
            "machine": machine(), "dataset": args.dataset, "device": args.device}


def run_mf(args) -> list[str]:
    from scripts._common import append_jsonl

    done = {(r["arm"], r["seed"]) for r in _results(MF_RESULTS) if _mf_usable(r, args)}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for arm in args.arms:
            if args.report_only or (arm, seed) in done:
                continue
            if args.max_minutes is not None and time.perf_counter() - t0 >= 60 * args.max_minutes:
                _logger.info("stopping: --max-minutes %g reached", args.max_minutes)
                break
            rec = run_mf_one(args, arm, seed)
            append_jsonl(MF_RESULTS, rec)
            _logger.info("%s seed %d: hypervolume %.4f retrained (%.4f as searched), per rung %s", arm, seed,
                         rec["rescored_hypervolume"], rec["hypervolume"], rec["per_rung"])
    return mf_lines([r for r in _results(MF_RESULTS, warn=False) if _mf_usable(r, args)], args)


def _results(path: Path, *, warn: bool = True) -> list[dict]:
    """The JSON lines of ``path``; a malformed line is skipped (and left in the file), logged if ``warn``."""
    from scripts._common import read_jsonl

    records, problems = read_jsonl(path)
    for msg in problems if warn else ():
        _logger.warning("%s: %s (skipped)", path, msg)
    return [r for _, r in records]


def _mf_usable(rec: dict, args) -> bool:
    """A result of this budget and population with its retrained front (a line from before the retraining, or
    from before the population was fixed, is run again; the line itself stays in the file)."""
    return (rec.get("budget_minutes") == args.budget_minutes and "rescored_front" in rec
            and rec.get("population") == _mf_population())


def _mf_population() -> int:
    """The NSGA-II population of the default CPU search, which the arms keep (and a usable result records)."""
    from nas import SearchConfig

    return SearchConfig().for_train_device("cpu").population


def _nadir(records: list[dict]) -> tuple[float, float] | None:
    """The worst accuracy and latency over every recorded (rescored) front point; None if no front has a point."""
    pts = [p for r in records for p in r.get("rescored_front", [])]
    if not pts:
        return None
    return min(a for a, _ in pts), max(lat for _, lat in pts)


def mf_lines(records: list[dict], args) -> list[str]:
    """The BENCHMARKS.md section of the multi-fidelity comparison (partial results say so)."""
    by_arm: dict[str, list[dict]] = {}
    for r in records:
        by_arm.setdefault(r["arm"], []).append(r)
    lines = [
        "## Search: multi-fidelity vs single-fidelity at equal compute",
        "",
        f"Command: `python scripts/bench_search.py --mf --budget-minutes {args.budget_minutes} --seeds {args.seeds}`  ",
        f"Raw results: `benchmarks/search/mf.jsonl`. Each study runs `--timeout {60 * args.budget_minutes}` s on one "
        "thread; multi-fidelity: the default rungs; single-fidelity: every candidate at the top rung (its images, "
        "2 seeds). Each front is then retrained with the top rung's recipe on seeds no search used "
        f"({', '.join(map(str, RESCORE_SEEDS))}; a front's own accuracies are the best of noisy draws, the more "
        "optimistic the more candidates were drawn), and its hypervolume taken against accuracy "
        f"{CHANCE} (chance) and latency {args.hv_latency_ref} ms (PREDICTED iphone12).",
        "",
        "| arm | seeds done | hypervolume per seed | mean | spread (max - min) | as searched (mean) "
        "| nadir hypervolume per seed | candidates per rung (mean) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    nadir = _nadir(records)
    means, local_means = {}, {}
    for arm in ARMS:
        rs = sorted(by_arm.get(arm, []), key=lambda r: r["seed"])
        if not rs:
            lines.append(f"| {arm} | 0 | - | - | - | - | - | - |")
            continue
        hv = [r["rescored_hypervolume"] for r in rs]
        means[arm] = (float(np.mean(hv)), max(hv) - min(hv))
        local = [hypervolume_2d([tuple(p) for p in r["rescored_front"]], *nadir) for r in rs] if nadir else []
        rungs = sorted({k for r in rs for k in r["per_rung"]}, key=int)
        per = ", ".join(f"r{k}: {np.mean([r['per_rung'].get(k, 0) for r in rs]):.1f}" for k in rungs)
        if local:
            local_means[arm] = (float(np.mean(local)), max(local) - min(local))
        lines.append(f"| {arm} | {len(rs)} | {', '.join(f'{v:.4f}' for v in hv)} | {means[arm][0]:.4f} | "
                     f"{means[arm][1]:.4f} | {np.mean([r['hypervolume'] for r in rs]):.4f} | "
                     f"{', '.join(f'{v:.5f}' for v in local) or '-'} | {per} |")
    if nadir:
        lines += ["", f"Nadir hypervolume: against the worst accuracy ({nadir[0]:.4f}) and the slowest latency "
                      f"({nadir[1]:.3f} ms) of all retrained fronts together, i.e. only the region where the fronts "
                      "differ (the chance-accuracy reference counts the area every front shares). Reported beside "
                      "the goal's figure, not instead of it."]
    complete = all(len(by_arm.get(a, [])) >= args.seeds for a in ("mf-nsga2", "sf-nsga2"))
    if "mf-nsga2" in means and "sf-nsga2" in means and complete:
        lines += _verdict_lines(means, local_means)
    else:
        lines += ["", f"Partial: fewer than {args.seeds} seeds of each arm recorded; no comparison is claimed yet."]
    return lines


def _verdict_lines(means: dict, local_means: dict) -> list[str]:
    """The goal's verdict (multi-fidelity vs single-fidelity NSGA-II), then every pair of arms by both
    hypervolumes; ``means`` and ``local_means`` map an arm to its ``(mean, spread)``."""
    gain, outside = _gain(means["mf-nsga2"], means["sf-nsga2"])
    met = gain >= MF_GOAL and outside
    lines = ["", f"Multi-fidelity vs single-fidelity NSGA-II (retrained fronts): {gain:+.1%} hypervolume "
                 f"({'outside' if outside else 'inside'} the seed spread). Goal (>= +{MF_GOAL:.0%}, outside the "
                 f"spread): {'met' if met else 'NOT met'}.", "",
             "Every pair of arms, by both hypervolumes (the goal is judged on the first alone):", ""]
    measures = ((means, "hypervolume"), (local_means, "nadir hypervolume"))
    for a, b in (("mf-nsga2", "sf-nsga2"), ("mf-nsga2", "sf-random"), ("sf-nsga2", "sf-random")):
        if a in means and b in means:
            lines.append(f"- {a} vs {b}: " + "; ".join(
                _versus(m[a], m[b], what) for m, what in measures if a in m and b in m) + ".")
    return lines


def _gain(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, bool]:
    """Relative gain of mean ``a`` over mean ``b`` (each ``(mean, spread)``), and whether the difference, either
    way, exceeds the larger of the two seed spreads."""
    gain = a[0] / b[0] - 1 if b[0] else float("nan")
    return gain, abs(a[0] - b[0]) > max(a[1], b[1])


def _versus(a: tuple[float, float], b: tuple[float, float], what: str) -> str:
    if not b[0]:
        return f"{what} not comparable (the second arm's is 0)"
    gain, outside = _gain(a, b)
    return f"{what} {gain:+.1%} ({'outside' if outside else 'inside'} the seed spread)"


DEFAULT_GOAL_MINUTES = 20.0
"""Goal: the plain ``python -m nas.search --device iphone12`` finishes within this on the idle 2-core machine."""
DEFAULT_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "search" / "default_runs.jsonl"


def run_default(args, extra: tuple[str, ...] = ()) -> dict:
    """Time the plain default command in a fresh folder (no storage, LUT or run folder yet) as a subprocess, then
    read its studies back: candidates and baselines per rung, median seconds of an evaluation at each rung.
    (``extra`` options are for the tests, which cannot wait 20 minutes.)"""
    import os
    import subprocess

    import optuna

    from nas import SearchConfig
    from nas._config import BASELINE_SUFFIX, RUNGS_SUFFIX
    from nas._record import StudyKeys
    from nas._search import collect

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "REPNAS_LUT_DB"}  # a fresh LUT, as a new user has
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        load = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "nas.search", "--device", args.device, *extra], cwd=tmp,
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"error: the default search exited with {proc.returncode}: "
                             f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        url = f"sqlite:///{tmp}/repnas-search.db"
        names = [n for n in optuna.get_all_study_names(url) if not n.endswith((RUNGS_SUFFIX, BASELINE_SUFFIX))]
        if len(names) != 1:
            raise SystemExit(f"error: expected one search study in {url}, found {names or 'none'}")
        (name,) = names
        study = optuna.load_study(study_name=name, storage=url)
        identity = study.user_attrs[StudyKeys.CONFIG]
        got = collect(SearchConfig(device=args.device, storage=url, study=name), study)
    per_rung = {}
    for r, images in enumerate(identity["rungs"]):
        cands = list(got.by_rung.get(r, {}).values())
        bases = list(got.baselines_by_rung.get(r, {}).values())
        secs = [c.extra["seconds"] for c in cands + bases if "seconds" in c.extra]
        top = r == len(identity["rungs"]) - 1
        per_rung[str(r)] = {"images": images, "seeds": identity["top_seeds"] if top else 1, "candidates": len(cands),
                            "baselines": len(bases), "median_seconds": float(np.median(secs)) if secs else None}
    return {"wall_seconds": round(wall, 1), "loadavg_start": [round(x, 2) for x in load], "per_rung": per_rung,
            "rungs": identity["rungs"], "eta": identity["eta"], "command": " ".join(["nas.search", "--device",
                                                                                     args.device, *extra]),
            "machine": machine(), "device": args.device, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "front": [[c.accuracy, c.accuracy_sd, c.latency_ms] for c in got.front()]}


def default_lines(records: list[dict], args) -> list[str]:
    """The BENCHMARKS.md section of the default command's timings (every recorded run, newest last)."""
    lines = [
        "## Search: the default command on this machine",
        "",
        f"Command: `python scripts/bench_search.py --default-run` (times `python -m nas.search --device "
        f"{args.device}` in a fresh folder: no storage, LUT rows or run folder yet; raw results: "
        "`benchmarks/search/default_runs.jsonl`). Goal: within "
        f"{DEFAULT_GOAL_MINUTES:.0f} minutes on the idle 2-core machine, with more than 30 candidates at the "
        "cheapest rung.",
        "",
        "| when | command | rungs (images) | wall | candidates per rung | baselines per rung | median s per "
        "evaluation per rung | load at start | goal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        rungs = [r["per_rung"][k] for k in sorted(r["per_rung"], key=int)]
        met = r["wall_seconds"] <= 60 * DEFAULT_GOAL_MINUTES and rungs[0]["candidates"] > 30
        med = ", ".join("-" if x["median_seconds"] is None else f"{x['median_seconds']:.0f}" for x in rungs)
        lines.append(
            f"| {r['time'][:16]} | `{r['command']}` | {', '.join(map(str, r['rungs']))} | "
            f"{r['wall_seconds'] / 60:.1f} min | {', '.join(str(x['candidates']) for x in rungs)} | "
            f"{', '.join(str(x['baselines']) for x in rungs)} | {med} | {r['loadavg_start'][0]:.2f} | "
            f"{'met' if met else 'NOT met'} |")
    if records:
        lines += ["", f"Machine: {records[-1]['machine']}. An evaluation at the top rung trains one model per seed; "
                      "its seconds are the sum."]
    return lines


def run_tau(args) -> list[str]:
    from scipy.stats import kendalltau

    from nas import ProxyConfig, load_dataset, train_proxy, zero_cost_score
    from search_space import SearchSpace, zoo

    data = load_dataset(args.dataset)
    genomes = [(n, g) for n, g in sorted(zoo.items())]
    rng = np.random.default_rng(args.seed)
    space = SearchSpace()
    while len(genomes) < args.genomes:
        genomes.append((f"random-{len(genomes) - len(zoo)}", space.sample(rng)))
    base = ProxyConfig()
    if args.epochs:
        base = dataclasses.replace(base, epochs=args.epochs)
    long_cfg = dataclasses.replace(base, epochs=base.epochs * args.long_factor)
    rows = []
    for name, g in genomes:
        t0 = time.perf_counter()
        short = train_proxy(g, data, config=base, seed=args.seed)
        t1 = time.perf_counter()
        long = train_proxy(g, data, config=long_cfg, seed=args.seed)
        t2 = time.perf_counter()
        zc = {m: zero_cost_score(g, data, method=m, resolution=base.resolution, seed=args.seed)
              for m in ("naswot", "synflow", "params", "macs")}
        rows.append((name, short.accuracy, long.accuracy, zc, t1 - t0, t2 - t1))
        _logger.info("%s: proxy %.4f (%.0f s), long %.4f (%.0f s), %s", name, short.accuracy, t1 - t0,
                     long.accuracy, t2 - t1, {k: round(v, 3) for k, v in zc.items()})
    long_acc = [r[2] for r in rows]

    def tau(xs) -> str:
        t = kendalltau(xs, long_acc).statistic
        return "n/a" if t != t else f"{t:.3f}"

    lines = [
        "## Search: proxy rank fidelity",
        "",
        f"Command: `python scripts/bench_search.py --genomes {args.genomes} --long-factor {args.long_factor} "
        f"--skip-hv" + (f" --epochs {args.epochs}" if args.epochs else "") + "`  ",
        f"Machine: {machine()}  ",
        f"{len(rows)} genomes ({len(zoo)} zoo models + {len(rows) - len(zoo)} random genomes of the default space), "
        f"{args.dataset}. Reference: the same training {args.long_factor}x longer ({long_cfg.epochs} epochs). "
        "Kendall tau against the reference accuracy:",
        "",
        "| score | Kendall tau |",
        "| --- | --- |",
        f"| proxy training ({base.epochs} epoch(s), {base.resolution}px) | {tau([r[1] for r in rows])} |",
        f"| NASWOT (zero-cost) | {tau([r[3]['naswot'] for r in rows])} |",
        f"| synflow (zero-cost) | {tau([r[3]['synflow'] for r in rows])} |",
        f"| parameter count (baseline) | {tau([r[3]['params'] for r in rows])} |",
        f"| MACs (baseline) | {tau([r[3]['macs'] for r in rows])} |",
        "",
        "| genome | proxy acc | reference acc | proxy s | reference s |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {n} | {s:.4f} | {lacc:.4f} | {ts:.0f} | {tl:.0f} |" for n, s, lacc, _, ts, tl in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="iphone12")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--lut-db", default=None)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--samplers", nargs="+", default=["nsga2", "tpe", "random"])
    p.add_argument("--hv-latency-ref", type=float, default=3.0)
    p.add_argument("--hv-proxy", choices=["train", "zero-cost"], default="train",
                   help="objective of the hypervolume studies (zero-cost: NASWOT, minutes instead of hours)")
    p.add_argument("--genomes", type=int, default=12)
    p.add_argument("--long-factor", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None, help="proxy epochs (default: the proxy's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-hv", action="store_true")
    p.add_argument("--skip-tau", action="store_true")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--mf", action="store_true", help="multi- vs single-fidelity search at equal compute")
    p.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    p.add_argument("--budget-minutes", type=float, default=20.0, help="wall-clock budget of each --mf study")
    p.add_argument("--max-minutes", type=float, default=None, help="--mf: stop after the study in progress")
    p.add_argument("--report-only", action="store_true",
                   help="--mf, --default-run: only rewrite the section from the results")
    p.add_argument("--default-run", action="store_true",
                   help="time the plain `python -m nas.search --device DEVICE` in a fresh folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.default_run:
        from scripts._common import append_jsonl

        if not args.report_only:
            append_jsonl(DEFAULT_RESULTS, run_default(args))
        lines = default_lines(_results(DEFAULT_RESULTS), args)
        print("\n".join(lines))
        if not args.no_write:
            update_section("bench_search_default", "\n".join(lines))
        return 0
    if args.mf:
        lines = run_mf(args)
        print("\n".join(lines))
        if not args.no_write:
            update_section("bench_search_mf", "\n".join(lines))
        return 0
    if not args.skip_tau:
        lines = run_tau(args)
        print("\n".join(lines))
        if not args.no_write:
            update_section("bench_search_tau", "\n".join(lines))
    if not args.skip_hv:
        lines = run_hv(args)
        print("\n".join(lines))
        if not args.no_write:
            # one section per proxy: the trained-proxy and zero-cost comparisons are kept side by side
            update_section("bench_search_hv" if args.hv_proxy == "train" else "bench_search_hv_zero_cost",
                           "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
