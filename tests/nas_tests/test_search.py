"""nas.search end to end: run folder, resume, SIGKILL recovery, PostgreSQL workers, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nas._search import BASELINE_SUFFIX, SearchConfig, min_reachable_latency
from nas._storage import open_storage
from nas.search import main

from ._postgres import PostgresServer, pg_bin
from ._util import wait_until as _wait

ROOT = Path(__file__).resolve().parents[2]
S = optuna.trial.TrialState


@pytest.fixture(scope="module")
def lut_db(tmp_path_factory) -> str:
    """One LUT for the module (iphone12 rows are predicted on demand; sharing them saves time)."""
    return str(tmp_path_factory.mktemp("lut") / "lut.db")


def _args(tmp_path: Path, lut_db: str, *extra: str) -> list[str]:
    return ["--device", "iphone12", "--dataset", "synthetic", "--storage", str(tmp_path / "s.db"),
            "--study", "t", "--out", str(tmp_path / "run"), "--lut-db", lut_db, "--no-progress", *extra]


def _trials(storage: str, study: str = "t"):
    st = open_storage(storage, heartbeat_interval=None)
    return optuna.load_study(study_name=study, storage=st).get_trials(deepcopy=False)


def test_zero_cost_search_writes_the_run_folder_with_baselines(tmp_path, lut_db, capsys):
    rc = main(_args(tmp_path, lut_db, "--proxy", "zero-cost", "--trials", "6"))
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "PREDICTED for iphone12" in out and "seed baselines" in out
    run = tmp_path / "run"
    for name in ("pareto.csv", "pareto.json", "pareto.png", "report.md"):
        assert (run / name).stat().st_size > 0, name
    doc = json.loads((run / "pareto.json").read_text())
    assert doc["pareto"] and all(r["latency_source"] == "predicted" for r in doc["pareto"])
    # a zero-cost score is no accuracy: the rows say so, and the tables show no accuracy column
    assert doc["metric"] == "naswot score (zero-cost)"
    assert all(r["accuracy"] is None and r["accuracy_sd"] is None for r in doc["pareto"] + doc["baselines"])
    assert "PREDICTED" in doc["latency_label"] and "leave-one-family-out" in doc["latency_label"]
    from search_space import Genome, zoo

    assert {b["name"] for b in doc["baselines"]} == set(zoo)
    # every shown figure says how far to trust it: the calibration family its network resembles, or the worst case
    errors = {b["name"]: b["latency_error"] for b in doc["baselines"]}
    assert errors["repvit_m0_9"].startswith("like RepViT:") and errors["fastvit_t8"].startswith("like FastViT:")
    assert all(r["latency_error"] and ("like " in r["latency_error"] or "resembles no" in r["latency_error"])
               for r in doc["pareto"])
    for r in doc["pareto"]:
        g = Genome.from_json((run / "genomes" / f"trial_{r['trial']}.json").read_text())
        assert g.to_dict() == Genome.from_dict(r["genome"]).to_dict()
    assert (run / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    report = (run / "report.md").read_text()
    assert "Pareto front" in report and "Seed baselines" in report and "PREDICTED" in report
    assert "latency error" in report and "% median error" in report
    assert "naswot score (zero-cost) (mean +- sd) | seeds |" in report and "accuracy (mean" not in report
    trials = _trials(str(tmp_path / "s.db"))
    assert sum(t.state == S.COMPLETE for t in trials) == 6
    # resume: same command, more trials -> the first six are kept as they were, none duplicated
    before = {t.number: (t.params, t.values) for t in trials if t.state == S.COMPLETE}
    assert main(_args(tmp_path, lut_db, "--proxy", "zero-cost", "--trials", "8")) == 0
    after = _trials(str(tmp_path / "s.db"))
    done = {t.number: (t.params, t.values) for t in after if t.state == S.COMPLETE}
    assert len(done) == 8 and all(done[n] == v for n, v in before.items())
    assert len({t.number for t in after}) == len(after)
    b = _trials(str(tmp_path / "s.db"), "t" + BASELINE_SUFFIX)
    assert sorted(t.user_attrs["baseline"] for t in b if t.state == S.COMPLETE) == sorted(zoo)
    # the same command once more has nothing left to do
    assert main(_args(tmp_path, lut_db, "--proxy", "zero-cost", "--trials", "8")) == 0
    assert len(_trials(str(tmp_path / "s.db"))) == len(after)


def test_trained_proxy_keeps_front_weights_and_a_budget(tmp_path, lut_db, capsys):
    rc = main(_args(tmp_path, lut_db, "--trials", "3", "--epochs", "1", "--no-baselines", "--latency-max", "1.2",
                         "--rungs", "192"))
    assert rc == 0, capsys.readouterr().err
    trials = _trials(str(tmp_path / "s.db"))
    complete = [t for t in trials if t.state == S.COMPLETE]
    assert len(complete) == 3
    for t in trials:
        assert "constraints:latency_ms" in t.system_attrs
        if t.state == S.PRUNED:
            assert t.user_attrs["rejected"].startswith("rejected before training")
            assert t.user_attrs["latency_ms"] > 1.2 * 1.2
    doc = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert all(r["latency_ms"] <= 1.2 for r in doc["pareto"])
    kept = [r for r in doc["pareto"] if r["weights"]]
    assert kept and all(Path(r["weights"]).exists() for r in kept)
    from safetensors.torch import load_file

    from search_space import Genome, build_model

    r = kept[0]
    model = build_model(Genome.from_dict(r["genome"]), num_classes=10)
    model.load_state_dict(load_file(r["weights"]))


def test_latency_budget_below_the_space_is_refused(tmp_path, lut_db, capsys):
    cfg = SearchConfig(device="iphone12", lut_db=lut_db)
    ms, g = min_reachable_latency(cfg)
    assert 0 < ms < 1.0
    rc = main(_args(tmp_path, lut_db, "--latency-max", f"{ms * 0.9:.4f}"))
    err = capsys.readouterr().err
    assert rc == 2 and "below anything the search space can reach" in err and "PREDICTED" in err
    assert not (tmp_path / "s.db").exists() or not _trials_safe(tmp_path)


def _trials_safe(tmp_path):
    try:
        return _trials(str(tmp_path / "s.db"))
    except KeyError:
        return []


@pytest.mark.parametrize("extra, needle", [
    (["--device", "pixel9000"], "unknown device 'pixel9000'"),
    (["--storage", "postgresql://u:secret@127.0.0.1:1/db"], "cannot open storage"),
    (["--storage", "nosuchdialect://x/y"], "storage URL"),
    (["--workers", "2"], "SQLite"),
    (["--trials", "0"], "--trials"),
])
def test_bad_input_gives_one_message(tmp_path, lut_db, capsys, extra, needle):
    argv = _args(tmp_path, lut_db, "--proxy", "zero-cost")
    for i in range(0, len(extra), 2):  # later options override the defaults above
        argv += extra[i:i + 2]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and "Traceback" not in err and "secret" not in err
    assert err.count("error:") == 1


def test_missing_dataset_lists_where_it_looked(tmp_path, lut_db, capsys, monkeypatch):
    from nas import _data

    monkeypatch.setattr(_data, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_data, "FASHION_MNIST_URLS", ("http://127.0.0.1:9/",))  # nothing listens there
    rc = main(_args(tmp_path, lut_db, "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "mine")))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and "Traceback" not in err
    for place in ("mine", "env", "cache", "system"):
        assert str(tmp_path / place) in err, place


def test_resume_refuses_other_settings(tmp_path, lut_db, capsys):
    assert main(_args(tmp_path, lut_db, "--proxy", "zero-cost", "--trials", "1", "--no-baselines")) == 0
    rc = main(_args(tmp_path, lut_db, "--trials", "2", "--no-baselines", "--rungs", "640"))  # now --proxy train
    err = capsys.readouterr().err
    assert rc == 2 and "created with other settings" in err


@pytest.mark.slow
def test_sigkill_mid_trial_is_failed_and_retried_by_heartbeat(tmp_path, lut_db):
    storage = str(tmp_path / "s.db")
    argv = _args(tmp_path, lut_db, "--trials", "2", "--rungs", "640", "--no-baselines", "--heartbeat-interval", "1",
                 "--grace-period", "3")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "nas.search", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def running() -> bool:
        try:
            return any(t.state == S.RUNNING and "genome_key" in t.user_attrs for t in _trials(storage))
        except Exception:  # noqa: BLE001 - the study may not exist yet
            return False

    try:
        assert _wait(running, 120), "no trial started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    killed = [t for t in _trials(storage) if t.state == S.RUNNING]
    assert len(killed) == 1
    time.sleep(4)  # past the grace period: the heartbeat is stale
    rc = subprocess.run([sys.executable, "-m", "nas.search", *argv], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=600)
    assert rc.returncode == 0, rc.stderr[-2000:]
    trials = _trials(storage)
    assert not [t for t in trials if t.state == S.RUNNING]
    assert next(t for t in trials if t.number == killed[0].number).state == S.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert retried and retried[0].params == killed[0].params
    assert sum(t.state == S.COMPLETE for t in trials) == 2


@pytest.mark.slow
@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql)")
def test_three_workers_share_one_postgres_study(tmp_path, lut_db):
    server = PostgresServer()
    url = server.start()
    try:
        argv = ["--device", "iphone12", "--dataset", "synthetic", "--proxy", "zero-cost", "--storage", url,
                "--study", "pg", "--out", str(tmp_path / "run"), "--lut-db", lut_db, "--trials", "9",
                "--workers", "3", "--no-progress"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, "-m", "nas.search", *argv], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        trials = _trials(url, "pg")
        complete = [t for t in trials if t.state == S.COMPLETE]
        # workers claim trials before training: the study ends with exactly the target
        assert len(complete) == 9
        assert not [t for t in trials if t.state in (S.RUNNING, S.WAITING)]
        assert len({t.number for t in trials}) == len(trials)
        pids = {t.user_attrs["worker_pid"] for t in complete}
        assert len(pids) >= 2, "the work was not shared"
        b = _trials(url, "pg" + BASELINE_SUFFIX)
        names = [t.user_attrs["baseline"] for t in b if t.state == S.COMPLETE]
        from search_space import zoo

        assert sorted(names) == sorted(zoo), "each baseline evaluated exactly once"
        assert (tmp_path / "run" / "pareto.json").exists()
    finally:
        server.stop()


def test_storage_opens_in_optuna_dashboard(tmp_path, lut_db):
    pytest.importorskip("optuna_dashboard")
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    assert main(_args(tmp_path, lut_db, "--proxy", "zero-cost", "--trials", "2", "--no-baselines")) == 0
    app = wsgi(open_storage(str(tmp_path / "s.db"), heartbeat_interval=None))

    def get(path: str) -> dict:
        env: dict = {}
        setup_testing_defaults(env)
        env["PATH_INFO"] = path
        status: list[str] = []
        body = b"".join(app(env, lambda s, h, *a: status.append(s)))
        assert status[0].startswith("200"), (path, status)
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    study = next(s for s in studies if s["study_name"] == "t")
    assert len(study["directions"]) == 2
    detail = get(f"/api/studies/{study['study_id']}")
    assert len(detail["trials"]) == 2


def test_resume_refuses_another_proxy_protocol(tmp_path, lut_db, capsys):
    base = _args(tmp_path, lut_db, "--proxy", "zero-cost", "--trials", "1", "--no-baselines")
    assert main(base + ["--proxy-min-map", "2", "--proxy-width", "0.5"]) == 0
    stored = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.db"), heartbeat_interval=None)
                               ).user_attrs["repnas_config"]["proxy_config"]
    assert stored["min_stage_map"] == 2 and stored["width_multiplier"] == 0.5
    capsys.readouterr()
    rc = main(base + ["--proxy-min-map", "2"])  # width back to 1.0
    err = capsys.readouterr().err
    assert rc == 2 and "created with other settings" in err and "width_multiplier" in err


@pytest.mark.parametrize("extra", [["--proxy-width", "0"], ["--proxy-min-map", "0"], ["--proxy-images", "1"]])
def test_bad_proxy_options_give_one_message_and_store_nothing(tmp_path, lut_db, capsys, extra):
    rc = main(_args(tmp_path, lut_db, "--trials", "1", "--no-baselines", *extra))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert not (tmp_path / "s.db").exists()
