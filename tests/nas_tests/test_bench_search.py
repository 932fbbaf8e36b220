"""scripts/bench_search.py: the hypervolume and the multi-fidelity comparison's bookkeeping (no search is run)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from scripts import bench_search as bs


def _grid_hypervolume(points, ref_acc: float, ref_lat: float, n: int = 800) -> float:
    """Brute force: the share of a fine grid over the reference box that some point dominates."""
    acc_hi = max([a for a, _ in points] + [ref_acc])
    lat_lo = min([lat for _, lat in points] + [ref_lat])
    accs = np.linspace(ref_acc, acc_hi, n, endpoint=False) + (acc_hi - ref_acc) / (2 * n)
    lats = np.linspace(lat_lo, ref_lat, n, endpoint=False) + (ref_lat - lat_lo) / (2 * n)
    aa, ll = np.meshgrid(accs, lats)
    covered = np.zeros_like(aa, dtype=bool)
    for a, lat in points:
        covered |= (aa <= a) & (ll >= lat)
    return covered.mean() * (acc_hi - ref_acc) * (ref_lat - lat_lo)


def test_hypervolume_matches_a_grid_count() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        pts = [(float(a), float(lat)) for a, lat in zip(rng.uniform(0.5, 0.9, 7), rng.uniform(0.5, 2.5, 7))]
        assert bs.hypervolume_2d(pts, 0.1, 3.0) == pytest.approx(_grid_hypervolume(pts, 0.1, 3.0), rel=5e-3)
    assert bs.hypervolume_2d([], 0.1, 3.0) == 0.0
    assert bs.hypervolume_2d([(0.05, 1.0), (0.9, 3.5)], 0.1, 3.0) == 0.0  # outside the reference box
    # a dominated point adds nothing
    assert bs.hypervolume_2d([(0.8, 1.0), (0.7, 2.0)], 0.1, 3.0) == pytest.approx(0.7 * 2.0)


def _rec(arm: str, seed: int, front: list[list[float]], searched: list[list[float]] | None = None) -> dict:
    hv = bs.hypervolume_2d([tuple(p) for p in front], 0.1, 3.0)
    if searched is None:
        searched = [[a + 0.01, lat] for a, lat in front]  # the search's own figures: optimistic
    return {"arm": arm, "seed": seed, "budget_minutes": 20.0, "population": 10, "front": searched,
            "rescored_front": front,
            "hypervolume": bs.hypervolume_2d([tuple(p) for p in searched], 0.1, 3.0), "rescored_hypervolume": hv,
            "per_rung": {"0": 9, "1": 3}}


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"budget_minutes": 20.0, "seeds": 2, "hv_latency_ref": 3.0, **kw})


def test_mf_report_claims_nothing_until_every_seed_is_in() -> None:
    partial = [_rec("mf-nsga2", 0, [[0.85, 1.0]]), _rec("sf-nsga2", 0, [[0.84, 1.2]])]
    text = "\n".join(bs.mf_lines(partial, _args()))
    assert "Partial: fewer than 2 seeds" in text and "Goal" not in text
    assert "| sf-random | 0 |" in text


def test_mf_report_judges_the_goal_against_the_seed_spread() -> None:
    far = [_rec("mf-nsga2", s, [[0.86, 0.5]]) for s in (0, 1)] + [_rec("sf-nsga2", s, [[0.80, 1.5 + 0.1 * s]])
                                                                   for s in (0, 1)]
    text = "\n".join(bs.mf_lines(far, _args()))
    assert "Goal (>= +10%, outside the spread): met" in text
    pair = "- mf-nsga2 vs sf-nsga2: hypervolume +87.2% (outside the seed spread); nadir hypervolume"
    assert pair + " not comparable" in text  # the single-fidelity front is the nadir itself
    worse = far + [_rec("sf-random", s, [[0.70, 2.5]]) for s in (0, 1)]  # far behind: outside the spread, too
    text = "\n".join(bs.mf_lines(worse, _args()))
    assert "- sf-nsga2 vs sf-random: hypervolume +" in text and "- mf-nsga2 vs sf-random: hypervolume +" in text
    assert pair + " +" in text  # the nadir is now sf-random's front
    assert "Goal (>= +10%, outside the spread): met" in text  # the goal compares the NSGA-II arms alone
    near = [_rec("mf-nsga2", s, [[0.80, 1.0 + 0.5 * s]]) for s in (0, 1)] + [_rec("sf-nsga2", s, [[0.80, 1.1]])
                                                                             for s in (0, 1)]
    text = "\n".join(bs.mf_lines(near, _args()))
    assert "inside the seed spread" in text and "NOT met" in text
    # the nadir of all fronts: the worst accuracy and the slowest latency recorded
    assert bs._nadir(far) == (0.80, 1.6)
    assert "worst accuracy (0.8000) and the slowest latency (1.500 ms)" in text


def test_mf_goal_is_judged_on_the_retrained_fronts() -> None:
    # as searched, multi-fidelity looks far better; retrained on unseen seeds the two arms are alike
    recs = [_rec("mf-nsga2", s, [[0.80, 1.0]], searched=[[0.90, 0.5]]) for s in (0, 1)]
    recs += [_rec("sf-nsga2", s, [[0.80, 1.0 + 0.01 * s]], searched=[[0.80, 1.0]]) for s in (0, 1)]
    text = "\n".join(bs.mf_lines(recs, _args()))
    assert "NOT met" in text and "(retrained fronts): +0.3%" in text


def test_mf_run_resumes_from_its_results_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "mf.jsonl"
    old = {k: v for k, v in _rec("sf-random", 0, [[0.85, 1.0]]).items() if not k.startswith("rescore")}
    big_population = {**_rec("sf-nsga2", 0, [[0.85, 1.0]]), "population": 50}  # NSGA-II sized from the ceiling
    results.write_text(json.dumps(_rec("mf-nsga2", 0, [[0.85, 1.0]])) + "\n{cut sho\n" + json.dumps(old) + "\n"
                       + json.dumps(big_population) + "\n")
    monkeypatch.setattr(bs, "MF_RESULTS", results)
    ran = []
    monkeypatch.setattr(bs, "run_mf_one", lambda args, arm, seed: ran.append((arm, seed)) or _rec(arm, seed, []))
    bs.run_mf(_args(seeds=1, arms=["mf-nsga2", "sf-nsga2", "sf-random"], report_only=False, max_minutes=None))
    # the recorded study is skipped; one never retrained, or run with another NSGA-II population, is not
    assert ran == [("sf-nsga2", 0), ("sf-random", 0)]
    lines = results.read_text().splitlines()
    assert lines[1] == "{cut sho" and len(lines) == 6  # the malformed line stays where it was, nothing is removed


def test_mf_arms_keep_the_default_searchs_nsga2_population(tmp_path: Path) -> None:
    from nas import SearchConfig

    args = argparse.Namespace(device="iphone12", dataset="synthetic", lut_db=str(tmp_path / "lut.db"),
                              budget_minutes=20.0)
    default = SearchConfig().for_train_device("cpu")
    for arm in ("mf-nsga2", "sf-nsga2"):
        cfg = bs._mf_config(args, arm, 0, str(tmp_path))
        assert cfg.trials > 1000 and cfg.population == default.population == 10  # not a third of the ceiling


def test_rescore_retrains_each_front_member_on_the_unseen_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    import nas
    from nas import ProxyTrainingError, SearchConfig
    from nas._report import Candidate

    calls = []

    def fake_train(genome, data, *, config, seed):
        calls.append((genome["id"], config.train_size, seed))
        if genome["id"] == 2 and seed == bs.RESCORE_SEEDS[1]:
            raise ProxyTrainingError("diverged", reason="diverged")
        return argparse.Namespace(accuracy=0.8 + 0.01 * genome["id"] + (0.002 if seed == bs.RESCORE_SEEDS[0] else 0))

    monkeypatch.setattr(nas, "train_proxy", fake_train)
    cfg = SearchConfig(rungs=(1000, 3000)).for_train_device("cpu")
    front = [Candidate(number=i, score=0.9, accuracy=0.9, latency_ms=1.0 + i, genome={"id": i}, latency_source="x",
                       latency_resolution=224) for i in (1, 2)]
    out = bs.rescore(cfg, front, data=None)
    assert [c[2] for c in calls] == [*bs.RESCORE_SEEDS] * 2 and {c[1] for c in calls} == {3000}  # the top rung
    assert out[0] == [pytest.approx(0.811), 2.0]
    assert out[1] == [pytest.approx((0.822 + bs.CHANCE) / 2), 3.0]  # the failed retraining scores chance


def test_default_run_times_the_command_and_reads_its_rungs_back() -> None:
    args = argparse.Namespace(device="iphone12")
    extra = ("--dataset", "synthetic", "--trials", "4", "--rungs", "64,192", "--no-baselines", "--no-progress",
             "--threads", "1")
    rec = bs.run_default(args, extra)
    assert rec["rungs"] == [64, 192] and rec["eta"] == 3 and rec["wall_seconds"] > 0
    r0, r1 = rec["per_rung"]["0"], rec["per_rung"]["1"]
    assert (r0["candidates"], r0["baselines"], r0["seeds"], r1["seeds"]) == (4, 0, 1, 2)
    assert r1["candidates"] >= 1 and r0["median_seconds"] > 0 and rec["front"]
    text = "\n".join(bs.default_lines([rec], args))
    assert "`nas.search --device iphone12 --dataset synthetic" in text and "| NOT met |" in text  # 4 <= 30


def test_default_run_reports_a_failed_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match="the default search exited with 2"):
        bs.run_default(argparse.Namespace(device="iphone12"), ("--eta", "1"))
