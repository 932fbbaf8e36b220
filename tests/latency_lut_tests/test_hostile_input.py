"""Issue 10, latency_lut side: hostile input gets one `error:` line, stores nothing, prints no password.

Each test fails on the code before the fix: passwords in messages, multi-thread and zero-thread LUT rows,
tracebacks, an implausible per-call overhead stored as 0 ms rows, the README's `--zoo` commands failing at
224, and empty SQLite files left behind by refused commands.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latency_lut import (
    LatencyLookupError,
    LatencyRecord,
    LatencyTable,
    Source,
    build_lut,
    predict_latency,
    units_of_genome,
    validate_lut,
)
from latency_lut import _lut as lut_module
from latency_lut import _sources as sources_module
from latency_lut.__main__ import main as cli
from latency_lut._signatures import build_unit
from latency_lut._timing import ClockStats, TimingStats
from search_space import zoo

SECRET = "pw9731"
DEVICE = "my-pi"


def _one_error(capsys) -> str:
    """The command's stderr is one `error:` line (no traceback); returns it. Also checks stdout has no secret."""
    out, err = capsys.readouterr()
    assert "Traceback" not in err and SECRET not in out + err, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _record(key: str, device: str = "ort-cpu", threads: int = 1, ms: float = 0.5, sig=None) -> LatencyRecord:
    return LatencyRecord(device=device, signature_key=key, block_type="block", signature=sig or {"type": "block"},
                         median_ms=ms, p10_ms=ms * 0.9, p90_ms=ms * 1.1, runs=10, source=Source.MEASURED,
                         backend="onnxruntime-cpu", versions={"onnxruntime": "x"}, threads=threads,
                         created_at=dt.datetime.now(dt.timezone.utc))


@pytest.fixture
def stored(tmp_path):
    """A LUT holding rows already: refused commands must leave them exactly as they were."""
    db = tmp_path / "stored.db"
    table = LatencyTable(db)
    for i in range(3):
        table.add(_record(f"k{i}"))
    table.add(_record("r0", device=DEVICE))
    return db, table.records()


# -- item 7: no password in any message or output ---------------------------------------------------------------

#: (URL with the secret, a command-line to run against it); the servers are unreachable (port 9)
BAD_URLS = [
    f"postgresql+psycopg://:{SECRET}@127.0.0.1:9/nas",  # no user name
    f"postgresql+psycopg://nas@127.0.0.1:9/nas?password={SECRET}",  # password in the query string
    f"postgresql:/nas:{SECRET}@127.0.0.1:9/nas",  # malformed: one slash
    f"postgresql+psycopg://nas:pw@{SECRET}@127.0.0.1:9/nas",  # unencoded '@' in the password
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("argv", [
    ["devices"],
    ["show", "--device", "ort-cpu"],
    ["predict", "repvit_m0_9", "--device", DEVICE],  # an unknown device with a PostgreSQL LUT
    ["build", "--device", "iphone12", "--genome", "repvit_m0_9", "--no-progress"],
])
def test_no_password_in_messages_for_any_url_form(url, argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli([*argv, "--db", url]) == 2
    line = _one_error(capsys)
    assert "pw@" not in line and "9731" not in line
    assert list(tmp_path.iterdir()) == []  # and no SQLite file named after the URL


def test_a_malformed_url_is_refused_not_taken_for_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = f"postgresql:/u:{SECRET}@h/db"
    assert cli(["build", "--device", "iphone12", "--genome", "repvit_m0_9", "--db", bad]) == 2
    assert "malformed database URL" in _one_error(capsys)
    assert cli(["show", "--device", "ort-cpu", "--db", f"postgresql+psycopg://u:pw@{SECRET}@h/db"]) == 2
    assert "percent-encoded" in _one_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def pg_url():
    """A real PostgreSQL server (trust auth: any password is accepted), as the nas tests start it."""
    from tests.nas_tests._postgres import PostgresServer, pg_bin

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer()
    url = server.start()
    yield url
    server.stop()


def _with_secret(url: str, form: str) -> str:
    if form == "password":
        return url.replace("postgres@", f"postgres:{SECRET}@")
    return f"{url}?password={SECRET}"


@pytest.mark.parametrize("form", ["password", "query"])
def test_no_password_on_stdout_stderr_or_logs_with_a_working_postgres_lut(pg_url, form, tmp_path):
    url = _with_secret(pg_url, form)
    root = str(Path(__file__).resolve().parents[2])  # this checkout's code, whatever the working directory
    env = dict(os.environ, REPNAS_LUT_DB=url, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))

    def run(*argv: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "latency_lut", *argv, "-v"], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=300)
        assert SECRET not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    build = run("build", "--device", "iphone12", "--genome", "repvit_m0_9", "--no-progress")
    assert build.returncode == 0 and "already in postgresql+psycopg://postgres" in build.stderr  # the info line
    devices = run("devices")
    assert devices.returncode == 0 and "LUT postgresql+psycopg://postgres" in devices.stdout
    assert "iphone12" in devices.stdout
    unknown = run("predict", "repvit_m0_9", "--device", "my-phone")
    assert unknown.returncode == 2 and "unknown device" in unknown.stderr and "postgres" in unknown.stderr
    assert run("show", "--device", "iphone12").returncode == 0
    missing = run("predict", "repvit_m0_9", "--device", "ort-cpu", "--threads", "3")
    assert missing.returncode == 2
    assert list(tmp_path.iterdir()) == []


# -- item 8: thread counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["build", "--device", "ort-cpu", "--genome", "repvit_m0_9", "--threads", "2", "--resolution", "64", "--runs", "2"],
    ["validate", "--device", "ort-cpu", "--n", "1", "--threads", "2", "--resolution", "64"],
    ["predict", "repvit_m0_9", "--device", "ort-cpu", "--threads", "4", "--resolution", "64"],
])
def test_ort_cpu_refuses_more_than_one_thread_and_says_why(argv, stored, capsys):
    db, before = stored
    assert cli([*argv, "--db", str(db), *(["--no-progress"] if argv[0] != "predict" else [])]) == 2
    line = _one_error(capsys)
    assert "1 thread" in line and "61%" in line and "over-predict" in line
    assert LatencyTable(db).records() == before


@pytest.mark.parametrize("device", ["ort-cpu", "torch-cpu", "iphone12"])
@pytest.mark.parametrize("threads", ["0", "-1"])
@pytest.mark.parametrize("command", ["build", "predict", "validate"])
def test_zero_or_negative_threads_are_refused_on_every_device(device, threads, command, stored, tmp_path, capsys):
    db, before = stored
    argv = {"build": ["build", "--device", device, "--genome", "repvit_m0_9", "--resolution", "64", "--runs", "2",
                      "--no-progress"],
            "predict": ["predict", "repvit_m0_9", "--device", device, "--resolution", "64"],
            "validate": ["validate", "--device", device, "--n", "1", "--resolution", "64", "--no-progress"]}[command]
    for where in (db, tmp_path / "new.db"):
        assert cli([*argv, "--threads", threads, "--db", str(where)]) == 2
        line = _one_error(capsys)
        assert "threads" in line
    assert LatencyTable(db).records() == before
    assert not (tmp_path / "new.db").exists()


def test_thread_checks_in_the_python_api_come_before_anything_is_stored(tmp_path):
    db = tmp_path / "api.db"
    g = zoo["repvit_m0_9"]
    for call in (lambda: build_lut("ort-cpu", db=db, genomes=[g], resolution=64, threads=2, progress=False),
                 lambda: build_lut("torch-cpu", db=db, genomes=[g], resolution=64, threads=0, progress=False),
                 lambda: build_lut("ort-cpu", db=db, genomes=[g], resolution=64, runs=0, progress=False),
                 lambda: predict_latency(g, "ort-cpu", 64, db=db, threads=2),
                 lambda: predict_latency(g, "torch-cpu", 64, db=db, threads=-1),
                 lambda: validate_lut("ort-cpu", n=1, resolution=64, db=db, threads=2, progress=False),
                 lambda: validate_lut("ort-cpu", n=0, resolution=64, db=db, progress=False),
                 lambda: lut_module.calibrate_network("ort-cpu", db=db, resolution=64, threads=2, progress=False)):
        with pytest.raises(ValueError, match="threads|runs|--n"):
            call()
    assert not db.exists()
    with pytest.raises(ValueError, match="threads"):
        lut_module.predict_model_latency(build_unit(units_of_genome(g, 64)[0].signature), "torch-cpu",
                                         (3, 64, 64), threads=0)


def test_rows_of_another_thread_count_are_not_silently_summed(tmp_path, capsys):
    """LUTs written before the check held rows measured at --threads 0 (or 2): they are never reused for 1."""
    db = tmp_path / "old.db"
    table = LatencyTable(db)
    g = zoo["repvit_m0_9"]
    for u in units_of_genome(g, 64):
        table.add(_record(u.key, threads=0, sig=u.signature))
    before = table.records()
    with pytest.raises(LatencyLookupError, match="measured with 0 thread"):
        predict_latency(g, "ort-cpu", 64, db=table, on_demand=False)
    assert cli(["predict", "repvit_m0_9", "--device", "ort-cpu", "--resolution", "64", "--db", str(db)]) == 2
    assert "0 thread(s), not 1" in _one_error(capsys)
    assert LatencyTable(db).records() == before


# -- item 9: tracebacks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    (["predict", "{dir}", "--device", "ort-cpu"], ["is a folder"]),
    (["build", "--device", "ort-cpu", "--genome", "{dir}", "--no-progress"], ["is a folder"]),
    (["build", "--device", "ort-cpu", "--genome", "{bad_json}", "--no-progress"], ["malformed JSON"]),
    (["build", "--device", "ort-cpu", "--genome", "repvit_m0_9", "--runs", "0", "--no-progress"], ["runs"]),
    (["build", "--device", "ort-cpu", "--genome", "repvit_m0_9", "--runs", "-5", "--no-progress"], ["runs"]),
    (["build", "--device", "torch-cpu", "--genome", "repvit_m0_9", "--runs", "0", "--no-progress"], ["runs"]),
    (["validate", "--device", "ort-cpu", "--n", "0", "--no-progress"], ["--n", "positive"]),
    (["validate", "--device", "ort-cpu", "--n", "-3", "--no-progress"], ["--n", "positive"]),
    (["show", "--device", "ort-cpu", "--limit", "-1"], ["--limit"]),
    (["build", "--device", "gameboy", "--no-progress"], ["unknown device"]),
    (["bundle", "--device", DEVICE, "--out", "{tmp}/b", "--limit", "-2", "--genome", "repvit_m0_9"], ["limit"]),
])
def test_bad_arguments_give_one_error_line_and_create_nothing(argv, words, stored, tmp_path, capsys):
    db, before = stored
    (tmp_path / "bad.json").write_text("{not json")
    fill = {"dir": str(tmp_path), "bad_json": str(tmp_path / "bad.json"), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    for where in (db, tmp_path / "fresh.db"):
        assert cli([*argv, "--db", str(where)]) == 2
        line = _one_error(capsys)
        for w in words:
            assert w in line, line
    assert LatencyTable(db).records() == before
    assert not (tmp_path / "fresh.db").exists()  # a refused command leaves no empty SQLite file behind
    assert not (tmp_path / "b").exists()


def test_reading_commands_do_not_create_a_lut_file(tmp_path, capsys):
    db = tmp_path / "never.db"
    assert cli(["show", "--device", "ort-cpu", "--db", str(db)]) == 0
    assert cli(["devices", "--db", str(db)]) == 0
    assert cli(["predict", "repvit_m0_9", "--device", "my-phone", "--db", str(db)]) == 2
    assert "unknown device" in _one_error(capsys)
    assert not db.exists()


def test_a_corrupt_lut_message_names_the_file(tmp_path, capsys):
    db = tmp_path / "corrupt.db"
    table = LatencyTable(db)
    for i in range(50):
        table.add(_record(f"k{i}"))
    table.close()
    data = db.read_bytes()
    db.write_bytes(data[:100] + b"\xa5" * (len(data) - 100))  # a valid header, then garbage
    damaged = db.read_bytes()
    for argv in (["show", "--device", "ort-cpu"], ["predict", "repvit_m0_9", "--device", "iphone12"],
                 ["build", "--device", "iphone12", "--genome", "repvit_m0_9", "--no-progress"]):
        assert cli([*argv, "--db", str(db)]) == 2
        line = _one_error(capsys)
        assert f"the LUT database {db} is corrupt" in line and "--db" in line, line
    assert db.read_bytes() == damaged


# -- item 10: implausible per-call overheads ---------------------------------------------------------------------


def _results(overhead, ms: float = 0.5) -> dict:
    res = {u.key: {"median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.1, "runs": 10, "signature": u.signature,
                   "block_type": u.block_type}
           for u in units_of_genome(zoo["repvit_m0_9"], 64)}
    return {"kind": "repnas-latency-results", "format_version": 1, "device": DEVICE, "bundle_id": "0123456789abcdef",
            "call_overhead_ms": overhead, "host": {"threads": 1, "onnxruntime": "1.x", "platform": "test"},
            "results": res}


@pytest.mark.parametrize("overhead, words", [
    (1e9, ["implausible", "call_overhead_ms"]),
    (5.0, ["implausible", "not below the median timing", "as 0 ms"]),  # larger than the timings
    (0.5, ["implausible", "not below the median timing"]),
    (float("nan"), ["call_overhead_ms is nan"]),
    (float("inf"), ["call_overhead_ms is inf"]),
    (-0.01, ["negative call_overhead_ms"]),
])
def test_import_refuses_an_implausible_overhead_before_storing(overhead, words, stored, tmp_path, capsys):
    db, before = stored
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(overhead)))  # json writes NaN / Infinity, and reads them back
    assert cli(["import", "--device", DEVICE, str(path), "--db", str(db), "--no-progress"]) == 2
    line = _one_error(capsys)
    assert str(path) in line and "nothing was stored" in line
    for w in words:
        assert w in line, line
    assert LatencyTable(db).records() == before


def test_import_of_a_plausible_overhead_still_works(stored, tmp_path, capsys):
    db, before = stored
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(0.01)))
    assert cli(["import", "--device", DEVICE, str(path), "--db", str(db), "--no-progress"]) == 0
    rows = [r for r in LatencyTable(db).records(DEVICE) if r.signature_key != "r0"]
    assert rows and all(math.isclose(r.median_ms, 0.49) for r in rows)
    after = LatencyTable(db).records()
    assert all(r in after for r in before)


# -- item 11: the README's --zoo commands at the default resolution ------------------------------------------------


def test_readme_bundle_zoo_command_works_as_written(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPNAS_LUT_DB", raising=False)
    with caplog.at_level("INFO", logger="latency_lut"):
        assert cli("bundle --device my-pi --zoo --out pi/".split() + ["--no-progress"]) == 0
    assert "mobilevit_xs 256" in caplog.text  # says at which resolution each zoo model is taken
    manifest = json.loads((tmp_path / "pi" / "manifest.json").read_text())
    want = {u.key for g in zoo.values() for u in units_of_genome(g)}  # every zoo model at its native resolution
    assert {e["key"] for e in manifest["entries"]} == want
    assert manifest["resolutions"] == [224, 256]
    assert "micro-models written to pi" in capsys.readouterr().out
    assert not (tmp_path / "repnas-lut.db").exists()  # nothing stored, so no LUT file either


@pytest.fixture
def fast_measure(monkeypatch):
    """ort-cpu 'measurements' that take no time (the command path is what is tested here)."""
    stats = TimingStats(0.2, 0.19, 0.21, 0.01, 3)
    monkeypatch.setattr(sources_module, "measure_clocks", lambda *a, **k: ClockStats(stats, stats))
    for module in (lut_module, sources_module):
        monkeypatch.setattr(module, "call_overhead_ms", lambda *a, **k: 0.01)


def test_readme_build_zoo_command_works_as_written(tmp_path, monkeypatch, capsys, caplog, fast_measure):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPNAS_LUT_DB", raising=False)
    assert cli("build --device ort-cpu --zoo".split() + ["--no-progress"]) == 0
    table = LatencyTable(tmp_path / "repnas-lut.db")
    assert table.keys("ort-cpu") == {u.key for g in zoo.values() for u in units_of_genome(g)}
    for name, g in zoo.items():  # every zoo model can then be priced from the LUT alone
        assert predict_latency(g, "ort-cpu", g.resolution, db=table, on_demand=False) > 0, name
    # with --resolution 224, the models valid there are taken at 224; mobilevit_xs at its own 256, and it is said
    with caplog.at_level("INFO", logger="latency_lut"):
        assert cli(["build", "--device", "ort-cpu", "--zoo", "--resolution", "224", "--no-progress",
                    "--db", str(tmp_path / "at224.db")]) == 0
    assert "mobilevit_xs is not valid at resolution 224" in caplog.text and "native resolution 256" in caplog.text
    keys = LatencyTable(tmp_path / "at224.db").keys("ort-cpu")
    assert {u.key for u in units_of_genome(zoo["mobilevit_xs"], 256)} <= keys
    assert {u.key for u in units_of_genome(zoo["fastvit_t8"], 224)} <= keys
    # an explicitly named genome is taken at the resolution asked for, and refused where it is invalid
    assert cli(["build", "--device", "ort-cpu", "--genome", "mobilevit_xs", "--resolution", "224",
                "--db", str(tmp_path / "x.db")]) == 2
    assert "resolution 224" in _one_error(capsys)
    assert not (tmp_path / "x.db").exists()


def test_one_zoo_model_at_its_native_resolution_is_really_measured(tmp_path):
    """mobilevit_xs (invalid at 224) measured for real on ort-cpu at its own 256, with few runs."""
    db = tmp_path / "m.db"
    assert cli(["build", "--device", "ort-cpu", "--genome", "mobilevit_xs", "--runs", "2", "--no-progress",
                "--db", str(db)]) == 0
    rows = LatencyTable(db).records("ort-cpu")
    assert len(rows) == len({u.key for u in units_of_genome(zoo["mobilevit_xs"], 256)})
    assert all(r.threads == 1 and r.median_ms >= 0 for r in rows)

