"""Replays the reliability and security defects of a hostile new user's session against nas.search / nas.export.

Data loss from study names and run folders, settings checked before anything is stored, distributed and resumed
workers that never repeat each other (real PostgreSQL server, separate commands, SIGKILL, SIGINT), passwords in
messages and files, tracebacks instead of one ``error:`` line. The latency_lut side lives in
``tests/latency_lut_tests/test_hostile_input.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from nas._claims import claim
from nas._report import OWNER_FILE, run_folder_name
from nas._search import BASELINE_SUFFIX
from nas._storage import open_storage
from nas.search import main

from ._postgres import PostgresServer, pg_bin
from ._util import wait_until as _wait

ROOT = Path(__file__).resolve().parents[2]
S = optuna.trial.TrialState
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
needs_pg = pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql)")


@pytest.fixture(scope="module")
def lut_db(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("lut") / "lut.db")


@pytest.fixture(scope="module")
def pg():
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    server = PostgresServer()
    url = server.start()
    yield server, url
    server.stop()


def _argv(storage: str, lut_db: str, *extra: str, study: str = "t", out: str | None = None) -> list[str]:
    argv = ["--device", "iphone12", "--dataset", "synthetic", "--proxy", "zero-cost", "--storage", storage,
            "--study", study, "--lut-db", lut_db, "--no-progress", *extra]
    return argv + (["--out", out] if out else [])


def _trials(storage: str, study: str = "t"):
    st = open_storage(storage, heartbeat_interval=None)
    return optuna.load_study(study_name=study, storage=st).get_trials(deepcopy=False)


def _popen(argv: list[str], cwd: Path, *, sigint_ignored: bool = False) -> subprocess.Popen:
    """``sigint_ignored``: start the command with SIGINT ignored, as a shell starts a background job (or nohup)."""
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen([sys.executable, "-m", "nas.search", *argv], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ignore)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas.search", *argv], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)


def _run_together(argv: list[str], cwd: Path, n: int) -> None:
    """``n`` copies of one command started at the same moment, as on ``n`` machines; each must succeed."""
    procs = [_popen(argv, cwd) for _ in range(n)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


def _assert_distinct_and_exact(storage: str, study: str, n: int) -> None:
    trials = _trials(storage, study)
    complete = [t for t in trials if t.state == S.COMPLETE]
    keys = [t.user_attrs["genome_key"] for t in complete]
    assert len(complete) == n, f"{len(complete)} complete trials, wanted {n}"
    assert len(set(keys)) == len(keys), "a genome was trained twice"
    assert not [t for t in trials if t.state in (S.RUNNING, S.WAITING)]


def _assert_baselines_once(storage: str, study: str) -> None:
    from search_space import zoo

    b = _trials(storage, study + BASELINE_SUFFIX)
    queued = [t.user_attrs["baseline"] for t in b if "baseline" in t.user_attrs]
    done = [t.user_attrs["baseline"] for t in b if t.state == S.COMPLETE]
    assert sorted(queued) == sorted(zoo), f"baseline queue filled more than once: {sorted(queued)}"
    assert sorted(done) == sorted(zoo), f"each baseline trained exactly once: {sorted(done)}"


# -- 1, 2: run folders -------------------------------------------------------------------------------
def test_run_folder_names_are_one_safe_component_and_never_collide():
    names = ["t", "pair/x", "pair-x", "..", ".", "/etc", "a b", "x" * 600, "pair-x-0123456789", "ü"]
    folders = [run_folder_name(n) for n in names]
    assert len(set(folders)) == len(folders)
    for f in folders:
        assert "/" not in f and f not in (".", "..") and not f.startswith(".") and len(f) <= 80
    assert run_folder_name("repnas-iphone12-fashion-mnist") == "repnas-iphone12-fashion-mnist"


def test_study_dotdot_does_not_touch_the_current_folder(tmp_path, lut_db, monkeypatch, capsys):
    mine = {"report.md": "my notes", "pareto.csv": "my,data", "weights/w.safetensors": "my weights"}
    for rel, text in mine.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(_argv("x.db", lut_db, "--trials", "2", "--no-baselines", study="..")) == 0, capsys.readouterr().err
    for rel, text in mine.items():
        assert (tmp_path / rel).read_text() == text, rel
    run = tmp_path / "runs" / run_folder_name("..")
    assert (run / "report.md").is_file() and json.loads((run / OWNER_FILE).read_text())["study"] == ".."


def test_studies_with_similar_names_get_their_own_run_folders(tmp_path, lut_db, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for study in ("pair/x", "pair-x"):
        assert main(_argv("x.db", lut_db, "--trials", "2", "--no-baselines", study=study)) == 0
    a, b = (tmp_path / "runs" / run_folder_name(s) for s in ("pair/x", "pair-x"))
    assert a != b and (a / "report.md").is_file() and (b / "report.md").is_file()
    assert json.loads((a / "pareto.json").read_text())["study"] == "pair/x"


def test_a_run_folder_is_written_only_by_its_own_study(tmp_path, lut_db, capsys):
    out = str(tmp_path / "run")
    assert main(_argv(str(tmp_path / "s.db"), lut_db, "--trials", "1", "--no-baselines", out=out)) == 0
    before = (tmp_path / "run" / "report.md").read_text()
    capsys.readouterr()
    rc = main(_argv(str(tmp_path / "s.db"), lut_db, "--trials", "1", "--no-baselines", study="other", out=out))
    err = capsys.readouterr().err
    assert rc == 2 and "belongs to study 't'" in err and err.count("error:") == 1
    assert (tmp_path / "run" / "report.md").read_text() == before
    # the same study name in another storage is another study: refused too
    rc = main(_argv(str(tmp_path / "other.db"), lut_db, "--trials", "1", "--no-baselines", out=out))
    assert rc == 2 and "another storage" in capsys.readouterr().err
    # a folder of the user's own files is never a run folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "report.md").write_text("mine")
    rc = main(_argv(str(tmp_path / "s.db"), lut_db, "--trials", "1", "--no-baselines", out=str(tmp_path / "mine")))
    assert rc == 2 and "not the run folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "report.md").read_text() == "mine"


# -- 3: every setting checked before anything is stored ----------------------------------------------------
@pytest.mark.parametrize("bad, good", [
    (["--epochs", "100000"], ["--epochs", "1"]),
    (["--resolution", "32000"], ["--resolution", "224"]),
    (["--proxy-resolution", "4096"], ["--proxy-resolution", "32"]),
])
def test_rejected_settings_leave_nothing_stored(tmp_path, lut_db, capsys, bad, good):
    storage = str(tmp_path / "s.db")
    rc = main(_argv(storage, lut_db, "--trials", "1", "--no-baselines", *bad, out=str(tmp_path / "run")))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert not Path(storage).exists() and not (tmp_path / "run").exists()
    assert main(_argv(storage, lut_db, "--trials", "1", "--no-baselines", *good, out=str(tmp_path / "run"))) == 0


# -- 9: one error line, no traceback ------------------------------------------------------------------------
@pytest.mark.parametrize("extra, needle", [
    (["--threads", "-1"], "--threads"),
    (["--threads", "0"], "--threads"),
    (["--study", "x" * 600], "at most"),
    (["--out", "FILE"], "not a folder"),
])
def test_bad_options_give_one_message(tmp_path, lut_db, capsys, extra, needle):
    (tmp_path / "FILE").write_text("a file")
    extra = [str(tmp_path / "FILE") if e == "FILE" else e for e in extra]
    argv = _argv(str(tmp_path / "s.db"), lut_db, "--trials", "1", "--no-baselines")
    rc = main(argv + extra)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and needle in err and "Traceback" not in err, err
    assert (tmp_path / "FILE").read_text() == "a file"


def test_imagefolder_messages_say_what_was_found(tmp_path):
    from nas import NASError, load_dataset

    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "dog").mkdir(parents=True)
    with pytest.raises(NASError, match="2 class folder.*but no images"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "none").mkdir()
    with pytest.raises(NASError, match="no class sub-folders"):
        load_dataset(f"imagefolder:{tmp_path / 'none'}")


# -- 4, 5: claims ------------------------------------------------------------------------------------------
def _handle():
    from nas._studies import Handle

    storage = optuna.storages.InMemoryStorage()
    return Handle(optuna.create_study(storage=storage, directions=["maximize", "minimize"]), storage)


def test_claims_never_exceed_the_target_or_repeat_a_key():
    handle = _handle()
    study = handle.study
    verdicts: list[str] = []

    def worker(key: str, target: int | None) -> None:
        trial = study.ask()
        c = claim(handle, trial, key, target=target, poll=0.05)
        verdicts.append(c.verdict)
        if c.go:
            time.sleep(0.05)
            study.tell(trial, [1.0, 1.0])
        else:
            study.tell(trial, state=S.PRUNED)

    threads = [threading.Thread(target=worker, args=(f"g{i}", 4)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(t.state == S.COMPLETE for t in study.get_trials()) == 4
    verdicts.clear()
    threads = [threading.Thread(target=worker, args=("same", None)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts.count("go") <= 1
    # once scored, a key is a duplicate for good
    scored = next(t for t in study.get_trials() if t.state == S.COMPLETE)
    c = claim(handle, study.ask(), scored.user_attrs["genome_key"])
    assert (c.verdict, c.of) == ("duplicate", scored.number)


@pytest.mark.slow
@needs_pg
def test_three_commands_on_postgres_neither_repeat_nor_overshoot(tmp_path, lut_db, pg):
    _, url = pg
    argv = _argv(url, lut_db, "--trials", "6", "--heartbeat-interval", "1", "--grace-period", "3", study="three",
                 out=str(tmp_path / "run"))
    _run_together(argv, tmp_path, 3)
    _assert_distinct_and_exact(url, "three", 6)
    _assert_baselines_once(url, "three")
    # more trials, one command SIGKILLed mid-trial, then rerun: still exact and distinct
    argv = [a if a != "6" else "12" for a in argv]
    a, b = _popen(argv, tmp_path), _popen(argv, tmp_path)

    def a_is_running() -> bool:
        return any(t.state == S.RUNNING and t.user_attrs.get("worker_pid") == a.pid for t in _trials(url, "three"))

    assert _wait(a_is_running, 120), "the first command never started a trial"
    a.send_signal(signal.SIGKILL)
    a.wait(30)
    _, err = b.communicate(timeout=600)
    assert b.returncode == 0, err[-3000:]
    r = _run(argv, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_distinct_and_exact(url, "three", 12)
    _assert_baselines_once(url, "three")


@pytest.mark.slow
def test_two_commands_on_one_sqlite_study_neither_repeat_nor_overshoot(tmp_path, lut_db):
    storage = str(tmp_path / "s.db")
    argv = _argv(storage, lut_db, "--trials", "5", study="two", out=str(tmp_path / "run"))
    _run_together(argv, tmp_path, 2)
    _assert_distinct_and_exact(storage, "two", 5)
    _assert_baselines_once(storage, "two")


@pytest.mark.slow
def test_resume_after_sigkill_and_ctrl_c_trains_no_genome_twice(tmp_path, lut_db):
    storage = str(tmp_path / "s.db")
    argv = _argv(storage, lut_db, "--trials", "6", "--no-baselines", "--heartbeat-interval", "1",
                 "--grace-period", "3", out=str(tmp_path / "run"))
    p = _popen(argv, tmp_path)

    def n_complete() -> int:
        try:
            return sum(t.state == S.COMPLETE for t in _trials(storage))
        except Exception:  # noqa: BLE001 - the study may not exist yet
            return 0

    assert _wait(lambda: n_complete() >= 2, 300)
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    time.sleep(4)  # past the grace period
    r = _run(argv, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_distinct_and_exact(storage, "t", 6)
    # Ctrl-C (SIGINT) of a single-process search: one message, no traceback, the report written
    argv = [a if a != "6" else "9" for a in argv]
    p = _popen(argv, tmp_path)
    assert _wait(lambda: n_complete() >= 7, 300)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    front = json.loads((tmp_path / "run" / "pareto.json").read_text())["pareto"]
    assert front
    r = _run(argv, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_distinct_and_exact(storage, "t", 9)
    front = json.loads((tmp_path / "run" / "pareto.json").read_text())["pareto"]
    keys = [json.dumps(r["genome"], sort_keys=True) for r in front]
    assert len(keys) == len(set(keys)), "a genome listed twice in the front"


# -- 6: SIGINT with local workers -----------------------------------------------------------------------------
@pytest.mark.slow
@needs_pg
def test_sigint_stops_every_local_worker_and_writes_the_report(tmp_path, lut_db, pg):
    _, url = pg
    argv = _argv(url, lut_db, "--trials", "200", "--workers", "2", "--no-baselines", study="sigint",
                 out=str(tmp_path / "run"))
    p = _popen(argv, tmp_path, sigint_ignored=True)  # `kill -INT` stops it even as a background job

    def n_complete() -> int:
        try:
            return sum(t.state == S.COMPLETE for t in _trials(url, "sigint"))
        except Exception:  # noqa: BLE001
            return 0

    assert _wait(lambda: n_complete() >= 3, 300)
    p.send_signal(signal.SIGINT)  # to the parent alone, as `kill -INT` does
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-3000:]
    after = n_complete()
    time.sleep(4)
    assert n_complete() == after, "a worker kept running after the parent was interrupted"
    assert not [t for t in _trials(url, "sigint") if t.state == S.RUNNING]
    doc = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert doc["n_complete"] == after


# -- 7: secrets -------------------------------------------------------------------------------------------
SECRET = "Pw7391zz"


@pytest.mark.parametrize("storage", [
    f"postgresql://:{SECRET}@127.0.0.1:1/db",
    f"postgresql://u@127.0.0.1:1/db?password={SECRET}",
    f"postgresql:/user:{SECRET}@127.0.0.1/db",
    f"postgresql://user:{SECRET}@x@127.0.0.1:1/db",
])
def test_bad_storage_urls_never_echo_the_password(tmp_path, lut_db, capsys, storage):
    rc = main(_argv(storage, lut_db, "--trials", "1", "--no-baselines", out=str(tmp_path / "run")))
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert SECRET not in out + err


def test_unknown_device_with_a_postgres_lut_never_echoes_the_password(tmp_path, capsys):
    rc = main(_argv(str(tmp_path / "s.db"), f"postgresql://u:{SECRET}@127.0.0.1:1/lut", "--device", "pixel9000"))
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("error:") == 1 and SECRET not in out + err, err


@pytest.mark.slow
@needs_pg
def test_no_password_in_any_message_or_file_of_a_search_and_export(tmp_path, lut_db, pg):
    _, url = pg
    secret_url = url.replace("postgres@", f"postgres:{SECRET}@")  # the test server trusts 127.0.0.1
    assert SECRET in secret_url
    run = tmp_path / "run"
    texts = []
    argv = _argv(secret_url, lut_db, "--trials", "2", "--no-baselines", study="secret", out=str(run))
    r = _run(argv, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    texts += [r.stdout, r.stderr]
    # resuming with other settings is refused with the storage named, without its password
    r = _run([*argv, "--resolution", "256"], tmp_path)
    assert r.returncode == 2 and "created with other settings" in r.stderr, r.stderr[-3000:]
    texts += [r.stdout, r.stderr]
    trial = next(t.number for t in _trials(url, "secret") if t.state == S.COMPLETE)
    r = subprocess.run([sys.executable, "-m", "nas.export", "--storage", secret_url, "--study", "secret", "--trial",
                        str(trial), "--out", str(tmp_path / "export"), "--no-weights", "--runs", "1", "--lut-db",
                        lut_db], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    texts += [r.stdout, r.stderr]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "lut" not in p.parts[-2:]]
    assert any(p.name == "config.json" for p in files) and any(p.name == "report.md" for p in files)
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    for t in texts:
        assert SECRET not in t


# -- minor: a killed export leaves no hidden temporary folder ------------------------------------------------------
def test_export_removes_temporaries_of_killed_exports(tmp_path, lut_db, capsys):
    from nas.export import main as export_main

    storage = str(tmp_path / "s.db")
    assert main(_argv(storage, lut_db, "--trials", "1", "--no-baselines", out=str(tmp_path / "run"))) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".export.tmp-{dead.pid}"
    (stale / "sub").mkdir(parents=True)
    rc = export_main(["--storage", storage, "--study", "t", "--trial", "0", "--out", str(tmp_path / "export"),
                      "--no-weights", "--runs", "1", "--lut-db", lut_db])
    assert rc == 0, capsys.readouterr().err
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export")] == []


def test_an_inherited_claim_does_not_count():
    # Optuna's retry of a stale trial copies its user attributes, claim included: the copy has not claimed anything
    handle = _handle()
    copy = handle.study.ask()
    copy.set_user_attr("claim", [copy.number + 1000, "g"])  # the mark of the failed original, another number
    c = claim(handle, handle.study.ask(), "g", target=1, poll=0.01, deadline=time.monotonic() + 1)
    assert c.go


def test_identity_of_an_earlier_version_is_read_in_todays_form():
    from nas._config import SearchConfig
    from nas._studies import upgrade_identity

    # the first versions stored epochs and proxy_resolution; every version before the rungs had one fidelity
    cfg = SearchConfig(dataset="synthetic", epochs=2, rungs=(4000,)).for_train_device("cpu")
    old = {k: v for k, v in cfg.identity().items() if k not in ("proxy_config", "rungs", "eta", "top_seeds")}
    old |= {"epochs": 2, "proxy_resolution": None}
    assert upgrade_identity(old) == {**cfg.identity(), "eta": None, "top_seeds": 1}
