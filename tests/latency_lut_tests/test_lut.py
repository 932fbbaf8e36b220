"""LUT database, builds (resumable, kill-safe), prediction from the LUT, and bad input."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest

from latency_lut import (
    LatencyLookupError,
    LatencyRecord,
    LatencyTable,
    LUTStorageError,
    Source,
    UnknownDeviceError,
    build_lut,
    predict_latency,
    predict_model_latency,
    units_of_genome,
    validate_lut,
)
from latency_lut.__main__ import main as cli
from latency_lut._signatures import build_unit, enumerate_space
from search_space import SearchSpace, build_model, zoo

FAST = dict(runs=5, warmup=1)
SMALL = SearchSpace(resolution=64, widths=((16,), (32,), (64,), (96,)), depths=((1, 1),) * 4, kernel_sizes=(3,),
                    ffn_kernel_sizes=(0,), ffn_ratios=(2,), se_modes=("none",), downsamples=("metaformer",),
                    stems=("patchify",), heads=("linear",))


def _record(key="k1", device="ort-cpu", ms=1.5) -> LatencyRecord:
    return LatencyRecord(device=device, signature_key=key, block_type="block", signature={"type": "block"},
                         median_ms=ms, p10_ms=ms * 0.9, p90_ms=ms * 1.1, runs=10, source=Source.MEASURED,
                         backend="onnxruntime-cpu", versions={"onnxruntime": "x"}, threads=1,
                         created_at=dt.datetime.now(dt.timezone.utc))


def test_table_round_trip_and_no_overwrite(tmp_path):
    t = LatencyTable(tmp_path / "lut.db")
    assert t.add(_record())
    assert not t.add(_record(ms=9.9))  # existing key kept, not overwritten
    rec = t.get("ort-cpu", "k1")
    assert rec.median_ms == 1.5 and rec.source is Source.MEASURED and rec.versions == {"onnxruntime": "x"}
    assert t.keys("ort-cpu") == {"k1"} and t.devices() == {"ort-cpu": 1}
    # reopening sees the same rows
    assert LatencyTable(str(tmp_path / "lut.db")).get("ort-cpu", "k1") == rec


def test_units_cover_the_network_and_build_the_deployed_blocks():
    g = zoo["fastvit_sa12"]
    units = units_of_genome(g)
    assert sum(u.count for u in units) == 1 + 3 + 1 + sum(g.depths) + 1  # stem, downsamples, cpe, blocks, head
    for u in units:
        assert not [m for m in build_unit(u.signature).modules() if "BatchNorm" in type(m).__name__]


def test_enumerated_space_contains_every_sampled_genome():
    from latency_lut._signatures import signature_key

    all_keys = {signature_key(s) for s in enumerate_space(SMALL)}
    assert len(all_keys) > 0
    for seed in range(10):
        for u in units_of_genome(SMALL.sample(seed)):
            assert u.key in all_keys


def test_build_skips_existing_and_predict_sums_units(tmp_path):
    db = LatencyTable(tmp_path / "lut.db")
    first = build_lut("ort-cpu", db=db, space=SMALL, progress=False, **FAST)
    assert first["added"] == first["total"] > 0
    again = build_lut("ort-cpu", db=db, space=SMALL, progress=False, **FAST)
    assert again == {"total": first["total"], "skipped": first["total"], "added": 0}
    g = SMALL.sample(0)
    before = len(db.keys("ort-cpu"))
    ms = predict_latency(g, "ort-cpu", 64, db=db, on_demand=False)
    assert ms > 0 and len(db.keys("ort-cpu")) == before
    total = sum(u.count * db.get("ort-cpu", u.key).median_ms for u in units_of_genome(g))
    assert ms > total  # plus the one call overhead of the whole network


def test_missing_entries_are_measured_on_demand_or_named(tmp_path):
    db = LatencyTable(tmp_path / "lut.db")
    g = zoo["convnext_atto"]
    with pytest.raises(LatencyLookupError, match="no LUT entry"):
        predict_latency(g, "ort-cpu", 64, db=db, on_demand=False)
    assert predict_latency(g, "ort-cpu", 64, db=db) > 0
    assert len(db.keys("ort-cpu")) == len(units_of_genome(g, 64))


def test_predict_model_latency_measures_any_module():
    ms = predict_model_latency(build_model(zoo["repvit_m0_9"]), "ort-cpu", (3, 64, 64), runs=5)
    assert 0 < ms < 1000


def test_validate_reports_agreement(tmp_path):
    rep = validate_lut("ort-cpu", n=3, resolution=64, db=tmp_path / "v.db", runs=5, progress=False)
    assert len(rep.measured_ms) == 3 and all(m > 0 for m in rep.measured_ms)
    assert 0 <= rep.within_10 <= 1 and rep.mape >= 0 and "MAPE" in rep.summary()


def test_build_survives_sigkill_and_resumes(tmp_path):
    db_path = tmp_path / "lut.db"
    cmd = [sys.executable, "-m", "latency_lut", "build", "--device", "ort-cpu", "--genome", "repvit_m1_1",
           "--resolution", "224", "--db", str(db_path), "--runs", "40", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline:
        if db_path.exists():
            try:
                n = len(LatencyTable(db_path).keys("ort-cpu"))
            except LUTStorageError:
                n = 0
            if n >= 2:
                break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    table = LatencyTable(db_path)
    kept = {r.signature_key: r for r in table.records("ort-cpu")}
    total = len(units_of_genome(zoo["repvit_m1_1"]))
    assert 2 <= len(kept) < total
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    after = {r.signature_key: r for r in table.records("ort-cpu")}
    assert len(after) == total
    for k, r in kept.items():
        assert after[k] == r  # nothing measured before the kill was lost or redone


def test_bad_input_gives_one_message(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 10)
    before = corrupt.read_bytes()
    with pytest.raises(LUTStorageError, match="not a SQLite database"):
        LatencyTable(corrupt)
    assert corrupt.read_bytes() == before
    with pytest.raises(LUTStorageError, match="malformed database URL|cannot open"):
        LatencyTable("nonsense://x")
    with pytest.raises(UnknownDeviceError, match="unknown device"):
        predict_latency(zoo["fastvit_t8"], "pixel9", db=tmp_path / "a.db")
    for argv in (["predict", "fastvit_t8", "--device", "nope", "--db", str(tmp_path / "b.db")],
                 ["show", "--device", "ort-cpu", "--db", str(corrupt)],
                 ["show", "--device", "ort-cpu", "--db", "postgresql+psycopg://u:secret@127.0.0.1:9/none"],
                 ["build", "--device", "gameboy", "--db", str(tmp_path / "c.db")],
                 ["predict", "no_such_model", "--device", "ort-cpu", "--db", str(tmp_path / "d.db")]):
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err and "secret" not in err
    assert corrupt.read_bytes() == before


def test_predicted_rows_of_an_older_cost_model_are_repriced_not_trusted(tmp_path):
    import dataclasses

    g = zoo["repvit_m0_9"]
    table = LatencyTable(tmp_path / "lut.db")
    current = predict_latency(g, "iphone12", 224, db=table)
    stale = tmp_path / "stale.db"
    old = LatencyTable(stale)
    for rec in table.records("iphone12"):  # the same rows, as if an older cost model had priced them 10x higher
        old.add(dataclasses.replace(rec, median_ms=rec.median_ms * 10, versions={"cost_model": "v0 old"}))
    assert len(old.records("iphone12")) == len({u.key for u in units_of_genome(g, 224)})
    assert predict_latency(g, "iphone12", 224, db=old) == pytest.approx(current, rel=1e-9)
    assert all(r.versions["cost_model"] == "v0 old" for r in old.records("iphone12"))  # nothing overwritten
