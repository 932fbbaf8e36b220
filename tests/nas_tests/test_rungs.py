"""Multi-fidelity search: promotion rule, the typed trial record, noise-aware verdicts, rungs end to end."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas._config import BASELINE_SUFFIX, RUNGS_SUFFIX, SearchConfig
from nas._record import TrialRecord, eval_key, set_attrs
from nas._report import Candidate, baseline_verdict, pooled_seed_sd
from nas._rungs import crowding_distance, nondominated_ranks, promotion_order, to_promote
from nas._storage import open_storage
from nas.search import main
from search_space import zoo

from ._postgres import PostgresServer, pg_bin
from ._util import wait_until as _wait

ROOT = Path(__file__).resolve().parents[2]

S = optuna.trial.TrialState
points = st.lists(st.tuples(st.floats(0, 1), st.floats(0.1, 10)), min_size=1, max_size=30)


def _dominates(a, b) -> bool:
    return a[0] >= b[0] and a[1] <= b[1] and a != b


@settings(max_examples=60, deadline=None)
@given(points)
def test_ranks_are_non_dominated_sorting(pts):
    ranks = nondominated_ranks(pts)
    for i, p in enumerate(pts):
        # rank 0 exactly when nothing dominates; a dominated point ranks below every point dominating it
        assert (ranks[i] == 0) == (not any(_dominates(q, p) for q in pts))
        for j, q in enumerate(pts):
            if _dominates(q, p):
                assert ranks[j] < ranks[i]


@settings(max_examples=60, deadline=None)
@given(points, st.integers(2, 5))
def test_promotion_takes_the_front_first_and_floor_n_over_eta(pts, eta):
    chosen = to_promote(pts, eta)
    assert len(chosen) == len(pts) // eta and len(set(chosen)) == len(chosen)
    ranks = nondominated_ranks(pts)
    rest = set(range(len(pts))) - set(chosen)
    assert all(ranks[i] <= ranks[j] for i in chosen for j in rest)
    assert promotion_order(pts)[: len(chosen)] == chosen


def test_crowding_keeps_the_extremes_and_breaks_ties():
    front = [(0.5, 1.0), (0.6, 2.0), (0.62, 2.1), (0.9, 5.0)]
    d = crowding_distance(front)
    assert math.isinf(d[0]) and math.isinf(d[3]) and d[1] > 0 and d[2] > 0
    # of two points in one front, the isolated one is promoted before the crowded one
    pts = [(0.5, 1.0), (0.9, 5.0), (0.6, 2.0), (0.61, 2.05), (0.8, 4.0), (0.1, 9.0)]
    order = promotion_order(pts)
    assert order[:2] == [0, 1] and order.index(4) < order.index(3)
    with pytest.raises(ValueError, match="eta"):
        to_promote(pts, 1)


def test_record_round_trips_and_refuses_unknown_fields():
    rec = TrialRecord(genome={"a": 1}, genome_key=eval_key("k", 2), rung=2, candidate=5, seeds=[0, 1],
                      accuracies=[0.5, 0.7], accuracy_sd=0.1414)
    assert rec.genome_key == "k@rung2" and eval_key("k", 0) == "k"
    again = TrialRecord.from_attrs({**rec.to_attrs(), "something_new": 3})
    assert again == rec and again.extra == {"something_new": 3} and again.n_seeds == 2
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    set_attrs(trial, rung=1, fidelity=4000)
    assert TrialRecord.from_trial(trial).fidelity == 4000
    with pytest.raises(TypeError, match="rugn"):
        set_attrs(trial, rugn=1)


def _cand(n, acc, lat, *, sd=None, seeds=1, rung=0, name=""):
    return Candidate(number=n, score=acc, latency_ms=lat, genome={}, latency_source="predicted",
                     latency_resolution=224, name=name, baseline=bool(name), score_sd=sd, accuracy=acc,
                     accuracy_sd=sd, seeds=seeds, rung=rung)


def test_a_baseline_is_dominated_only_beyond_the_noise():
    b = _cand(0, 0.80, 2.0, sd=0.01, seeds=2, rung=1, name="zoo")
    sd = pooled_seed_sd([_cand(1, 0.8, 1, sd=0.01, seeds=2), _cand(2, 0.8, 1, sd=0.01, seeds=2)])
    assert sd == pytest.approx(0.01)
    margin = 2 * 0.01 * math.sqrt(1 / 2 + 1 / 2)
    close = _cand(3, 0.80 + margin / 2, 1.5, sd=0.01, seeds=2, rung=1)
    far = _cand(4, 0.80 + 2 * margin, 1.9, sd=0.01, seeds=2, rung=1)
    slower = _cand(5, 0.99, 2.5, sd=0.01, seeds=2, rung=1)
    assert baseline_verdict(b, [close], sd).kind == "tie"
    assert baseline_verdict(b, [close, far], sd).kind == "dominated"
    assert baseline_verdict(b, [slower], sd).kind == "not dominated"
    assert baseline_verdict(b, [_cand(6, 0.5, 1.0, sd=0.01, seeds=2, rung=1)], sd).kind == "not dominated"
    # no seed spread measured: compared as they are, and the verdict says so
    v = baseline_verdict(b, [close], None)
    assert v.kind == "dominated" and "noise not measured" in v.text()


def test_rungs_and_defaults_scale_with_the_device():
    cpu = SearchConfig().for_train_device("cpu")
    assert cpu.rungs == (667, 2000) and cpu.trials == 31
    assert [r.seeds for r in cpu.ladder()] == [(0,), (0, 1)]
    gpu = SearchConfig().for_train_device("cuda")
    assert gpu.rungs[-1] == 36000 and len(gpu.rungs) == 4 and gpu.trials > cpu.trials
    assert SearchConfig(proxy_images=9000, eta=3).for_train_device("cpu").rungs == (1000, 3000, 9000)
    assert SearchConfig().for_train_device("cpu", train_images=1000).rungs == (1000,)  # a small dataset
    assert SearchConfig(proxy="zero-cost").for_train_device("cpu").ladder()[0].top


def _memory_handle():
    from nas._studies import Handle

    storage = optuna.storages.InMemoryStorage()
    return Handle(optuna.create_study(storage=storage, directions=["maximize", "minimize"]), storage)


def test_a_queued_evaluation_is_requeued_unless_done_queued_or_failing_for_good():
    h = _memory_handle()
    rec = TrialRecord(genome={}, genome_key="g@rung1", rung=1, candidate=0)
    assert h.enqueue(rec) and not h.enqueue(rec)  # queued once
    first = h.study.ask()  # pops it; then a second copy (two workers promoting at once) ...
    h.study.enqueue_trial({}, user_attrs=rec.to_attrs())
    second = h.study.ask()
    for t, other in ((first, second), (second, first)):  # ... and both copies stepped back as duplicates
        t.set_user_attr("duplicate_of", other.number)
        h.study.tell(t, state=S.PRUNED)
    assert h.enqueue(rec), "a key whose copies all stepped back is lost"
    for _ in range(2):  # it fails twice (Ctrl-C, a killed worker past its retry): then it stays failed
        h.study.tell(h.study.ask(), state=S.FAIL)
        h.enqueue(rec)
    assert [t.state for t in h.study.get_trials()][-1] == S.FAIL and not h.enqueue(rec)
    done = TrialRecord(genome={}, genome_key="d@rung1", rung=1, candidate=1)
    assert h.enqueue(done)
    h.study.tell(h.study.ask(), [0.5, 1.0])
    assert not h.enqueue(done)


def test_a_trial_killed_before_its_objective_started_is_failed_after_the_grace_period():
    h = _memory_handle()
    h.study.ask()  # RUNNING, never reached an objective (no worker_pid), no heartbeat
    started = h.study.ask()
    started.set_user_attr("worker_pid", 1)
    assert h.fail_unstarted(3600) == 0
    assert h.fail_unstarted(0) == 1
    assert [t.state for t in h.study.get_trials()] == [S.FAIL, S.RUNNING]


def test_expected_seconds_come_from_the_rung_or_the_rung_below_scaled():
    from types import SimpleNamespace

    from nas._worker import _Scheduler

    class _H:
        def __init__(self, recs):
            self.recs = recs

        def records(self, states=None, fresh=False):
            return [(None, r) for r in self.recs]

    ladder = SearchConfig(rungs=(1000, 3000)).for_train_device("cpu").ladder()
    fake = SimpleNamespace(ladder=ladder, studies=SimpleNamespace(all=lambda: [_H([TrialRecord(rung=0, seconds=10.0),
                                                                                  TrialRecord(rung=0, seconds=12.0)])]))
    assert _Scheduler._expected_seconds(fake, 0) == pytest.approx(11.0)
    assert _Scheduler._expected_seconds(fake, 1) == pytest.approx(11.0 * 3 * 2)  # 3x the images, 2 seeds


def test_the_runaway_guard_ends_the_search_without_an_interrupt(tmp_path, lut_db, capsys, monkeypatch, caplog):
    import nas._objective

    def always_rejected(config, evaluator, trial, genome, resolution):
        set_attrs(trial, rejected="rejected before training: test")
        raise optuna.TrialPruned("rejected")

    monkeypatch.setattr(nas._objective, "_price", always_rejected)
    rc = main(_args(tmp_path, lut_db, "--proxy", "zero-cost", "--trials", "1", "--no-baselines"))
    assert rc == 0, capsys.readouterr().err
    assert "stopping: 20 evaluations of this worker failed or were rejected" in caplog.text


# -- end to end ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lut_db(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("lut") / "lut.db")


def _args(tmp_path: Path, lut_db: str, *extra: str) -> list[str]:
    return ["--device", "iphone12", "--dataset", "synthetic", "--storage", str(tmp_path / "s.db"), "--study", "t",
            "--out", str(tmp_path / "run"), "--lut-db", lut_db, "--no-progress", "--threads", "1", *extra]


def _trials(tmp_path: Path, name: str):
    return optuna.load_study(study_name=name, storage=open_storage(str(tmp_path / "s.db"), heartbeat_interval=None)
                             ).get_trials(deepcopy=False)


def test_successive_halving_promotes_trains_top_with_seeds_and_reports_noise(tmp_path, lut_db, capsys):
    rc = main(_args(tmp_path, lut_db, "--trials", "9", "--rungs", "64,192", "--latency-max", "1.6", "--proxy-score",
                    "accuracy"))
    assert rc == 0, capsys.readouterr().err
    search, rungs = _trials(tmp_path, "t"), _trials(tmp_path, "t" + RUNGS_SUFFIX)
    rung0 = [t for t in search if t.state == S.COMPLETE]
    assert len(rung0) == 9 and all(t.user_attrs["rung"] == 0 for t in search if "rung" in t.user_attrs)
    top = [t for t in rungs if t.state == S.COMPLETE]
    assert all(t.user_attrs["rung"] == 1 and t.user_attrs["fidelity"] == 192 for t in top)
    base = [t for t in _trials(tmp_path, "t" + BASELINE_SUFFIX) if t.state == S.COMPLETE]
    feasible = [t for t in rung0 + base if t.user_attrs["rung"] == 0 and t.user_attrs["feasible"]]
    up = top + [t for t in base if t.user_attrs["rung"] == 1]
    assert len(up) >= len(feasible) // 3  # at least the top 1/eta of the rung, candidates and baselines ranked together
    by_number = {t.number: t for t in rung0}
    for t in top:  # ... each a feasible candidate, once, with two seeds averaged
        assert by_number[t.user_attrs["candidate"]].user_attrs["feasible"]
        assert t.user_attrs["seeds"] == [0, 1] and len(t.user_attrs["accuracies"]) == 2
        assert t.values[0] == pytest.approx(sum(t.user_attrs["accuracies"]) / 2)
    keys = [t.user_attrs["genome_key"] for t in top]
    assert len(keys) == len(set(keys))
    assert {t.user_attrs["rung"] for t in base} <= {0, 1}
    every = _trials(tmp_path, "t" + BASELINE_SUFFIX)  # each zoo model scored at rung 0, or rejected (over budget)
    assert sorted(t.user_attrs["baseline"] for t in every if t.state in (S.COMPLETE, S.PRUNED)
                  and t.user_attrs.get("rung") == 0) == sorted(zoo)
    doc = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert doc["pareto"] and all(r["rung"] == 1 and r["seeds"] == 2 and r["fidelity"] == 192
                                 and r["accuracy_sd"] is not None for r in doc["pareto"])
    assert all(b["verdict"] in ("dominated", "tie", "not dominated", "n/a") for b in doc["baselines"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert "+-" in report and "rung 1 (192 images)" in report and "seed-to-seed spread" in report
    out = capsys.readouterr().out
    assert "mean +- sd" in out and "at rung 1" in out
    # --report-only rewrites the folder from the storage with the stored proxy description and dataset source
    (tmp_path / "run" / "report.md").unlink()
    assert main(_args(tmp_path, lut_db, "--report-only")) == 0
    again = (tmp_path / "run" / "report.md").read_text()
    assert "successive halving with eta=3" in again and "(generated)" in again


@pytest.mark.parametrize("extra, needle", [
    (["--eta", "1"], "--eta must be an integer >= 2"),
    (["--rungs", "500,500"], "must grow strictly"),
    (["--rungs", "10,100"], "at least one batch"),
    (["--rungs", "500,x"], "comma-separated integers"),
    (["--top-seeds", "1"], "--top-seeds must be an integer >= 2"),
    (["--rungs", "1000,5000"], "the top rung trains on 5,000 images"),
])
def test_bad_rung_options_give_one_message_and_store_nothing(tmp_path, lut_db, capsys, extra, needle):
    with pytest.raises(SystemExit) if "x" in extra[-1] else contextlib.nullcontext():
        rc = main(_args(tmp_path, lut_db, "--trials", "2", *extra))
        assert rc == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "run").exists()



@pytest.mark.slow
@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql)")
def test_three_workers_on_postgres_neither_lose_nor_double_a_rung_evaluation(tmp_path, lut_db):
    server = PostgresServer()
    url = server.start()
    try:
        argv = ["--device", "iphone12", "--dataset", "synthetic", "--storage", url, "--study", "mf",
                "--out", str(tmp_path / "run"), "--lut-db", lut_db, "--trials", "9", "--rungs", "64,192",
                "--workers", "3", "--no-progress"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, "-m", "nas.search", *argv], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        st = open_storage(url, heartbeat_interval=None)
        trials = {name: optuna.load_study(study_name=name, storage=st).get_trials(deepcopy=False)
                  for name in ("mf", "mf" + RUNGS_SUFFIX, "mf" + BASELINE_SUFFIX)}
        for name, ts in trials.items():
            assert not [t for t in ts if t.state in (S.RUNNING, S.WAITING)], name  # nothing lost in a queue
            done = [t.user_attrs["genome_key"] for t in ts if t.state == S.COMPLETE]
            assert len(done) == len(set(done)), f"{name}: an evaluation was doubled"
        assert sum(t.state == S.COMPLETE for t in trials["mf"]) == 9
        for name in ("mf" + RUNGS_SUFFIX, "mf" + BASELINE_SUFFIX):  # every queued evaluation was done once
            keys = {t.user_attrs["genome_key"] for t in trials[name] if "genome_key" in t.user_attrs}
            assert keys == {t.user_attrs["genome_key"] for t in trials[name] if t.state == S.COMPLETE}, name
        promoted = [t for name in ("mf" + RUNGS_SUFFIX, "mf" + BASELINE_SUFFIX) for t in trials[name]
                    if t.state == S.COMPLETE and t.user_attrs["rung"] == 1]
        assert len(promoted) >= (9 + 7) // 3  # the top 1/eta of the candidates and baselines at rung 0
        assert len({t.user_attrs["worker_pid"] for ts in trials.values() for t in ts if t.state == S.COMPLETE}) >= 2
        from search_space import zoo

        base0 = [t for t in trials["mf" + BASELINE_SUFFIX] if t.state == S.COMPLETE and t.user_attrs["rung"] == 0]
        assert sorted(t.user_attrs["baseline"] for t in base0) == sorted(zoo)
    finally:
        server.stop()


@pytest.mark.slow
def test_sigkill_during_a_promoted_evaluation_loses_only_that_evaluation(tmp_path, lut_db):
    argv = _args(tmp_path, lut_db, "--trials", "6", "--rungs", "64,640", "--no-baselines", "--heartbeat-interval",
                 "1", "--grace-period", "3")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "nas.search", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def promoted_running() -> bool:
        try:
            return any(t.state == S.RUNNING and t.user_attrs.get("claim") for t in
                       _trials(tmp_path, "t" + RUNGS_SUFFIX))
        except Exception:  # noqa: BLE001 - the study may not exist yet
            return False

    try:
        assert _wait(promoted_running, 300), "no promoted evaluation started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    before = {t.number: t.state for t in _trials(tmp_path, "t")}
    time.sleep(4)  # past the grace period
    r = subprocess.run([sys.executable, "-m", "nas.search", *argv], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    after = _trials(tmp_path, "t")
    assert all(after[n].state == s for n, s in before.items() if s == S.COMPLETE)  # nothing completed was lost
    rungs = _trials(tmp_path, "t" + RUNGS_SUFFIX)
    assert [t for t in rungs if t.state == S.FAIL]  # the killed evaluation, failed by the heartbeat ...
    done = [t.user_attrs["genome_key"] for t in rungs if t.state == S.COMPLETE]
    assert len(done) == len(set(done)) and not [t for t in rungs if t.state in (S.RUNNING, S.WAITING)]
    killed = next(t for t in rungs if t.state == S.FAIL)
    assert killed.user_attrs["genome_key"] in done  # ... and evaluated once by its retry


def test_val_loss_score_ranks_by_minus_the_loss_and_reports_accuracy_beside(tmp_path, lut_db, capsys):
    rc = main(_args(tmp_path, lut_db, "--trials", "3", "--rungs", "64,192", "--no-baselines", "--proxy-score",
                    "val-loss"))
    assert rc == 0, capsys.readouterr().err
    done = [t for t in _trials(tmp_path, "t") + _trials(tmp_path, "t" + RUNGS_SUFFIX) if t.state == S.COMPLETE]
    assert done
    for t in done:  # the objective is minus the mean validation loss; accuracy and loss of every seed recorded
        a = t.user_attrs
        assert len(a["losses"]) == len(a["accuracies"]) == len(a["seeds"])
        assert t.values[0] == pytest.approx(-sum(a["losses"]) / len(a["losses"]))
        assert (a.get("loss_sd") is not None) == (len(a["seeds"]) > 1)
    doc = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert doc["metric"] == "minus proxy validation loss"
    top = {t.user_attrs["candidate"]: t.user_attrs for t in done if t.user_attrs["rung"] == 1}
    assert doc["pareto"] and {r["trial"] for r in doc["pareto"]} <= set(top)
    for r in doc["pareto"]:  # the front is ranked by the score, and carries the real accuracy beside it
        a = top[r["trial"]]
        assert r["rung"] == 1 and r["score"] < 0
        assert r["score"] == pytest.approx(-sum(a["losses"]) / len(a["losses"]), abs=1e-5)
        assert r["score_sd"] == pytest.approx(a["loss_sd"], abs=1e-5)
        assert r["accuracy"] == pytest.approx(sum(a["accuracies"]) / len(a["accuracies"]), abs=1e-5)
        assert r["accuracy_sd"] == pytest.approx(a["accuracy_sd"], abs=1e-5)
    import csv

    with (tmp_path / "run" / "pareto.csv").open() as fh:
        assert {"score", "score_sd", "accuracy", "accuracy_sd"} <= set(next(csv.DictReader(fh)))
    report = (tmp_path / "run" / "report.md").read_text()
    assert "minus proxy validation loss (mean +- sd) | accuracy (mean +- sd)" in report
    assert "ranked by its validation loss" in report
    assert "accuracy mean +- sd" in capsys.readouterr().out
    # the study is bound to its score: resuming it ranked by accuracy is refused, nothing is lost
    rc = main(_args(tmp_path, lut_db, "--trials", "3", "--rungs", "64,192", "--no-baselines"))  # the default
    err = capsys.readouterr().err
    assert rc == 2 and "proxy_score='val-loss' (now 'accuracy')" in err
    assert len([t for t in _trials(tmp_path, "t") if t.state == S.COMPLETE]) == 3
    # --report-only with other scoring options still reports the score the study was searched by
    for other in ([], ["--proxy", "zero-cost"]):
        (tmp_path / "run" / "report.md").unlink()
        assert main(_args(tmp_path, lut_db, "--report-only", *other)) == 0, capsys.readouterr().err
        assert "minus proxy validation loss (mean +- sd)" in (tmp_path / "run" / "report.md").read_text()
        assert json.loads((tmp_path / "run" / "pareto.json").read_text())["pareto"] == doc["pareto"]


def test_an_identity_of_an_earlier_version_ranked_by_accuracy():
    from nas._studies import upgrade_identity

    old = SearchConfig(trials=2, rungs=(64,)).identity()
    assert old["proxy_score"] == "accuracy"  # today's default
    del old["proxy_score"]
    assert upgrade_identity(old) == SearchConfig(trials=2, rungs=(64,), proxy_score="accuracy").identity()
    zero = SearchConfig(trials=2, proxy="zero-cost").for_train_device("cpu").identity()
    del zero["proxy_score"]
    assert upgrade_identity(zero)["proxy_score"] is None


@pytest.mark.parametrize("extra, needle", [
    (["--proxy", "zero-cost", "--proxy-score", "val-loss"], "--proxy-score val-loss needs --proxy train"),
    (["--proxy-score", "loss"], "invalid choice: 'loss'"),
])
def test_bad_score_options_give_one_message_and_store_nothing(tmp_path, lut_db, capsys, extra, needle):
    with pytest.raises(SystemExit) if extra[-1] == "loss" else contextlib.nullcontext():
        assert main(_args(tmp_path, lut_db, "--trials", "2", *extra)) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "run").exists()
