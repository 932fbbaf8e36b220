"""Network correction: the fit, calibration/validation seed separation, storage, resume, old LUTs (no timing)."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pytest
from sqlalchemy import text

from latency_lut import LatencyRecord, LatencyTable, Source, _lut, _sources, _validate, clear_caches, predict_latency
from latency_lut._db import NetworkCorrection
from latency_lut._lut import (
    CALIBRATION_SEED,
    calibrate_network,
    calibration_genomes,
    fit_correction,
    network_correction,
)
from latency_lut._timing import ClockStats, TimingStats
from latency_lut._validate import ValidationReport, validate_lut, validation_genomes
from search_space import SearchSpace

SPACE = SearchSpace(resolution=64)
A, B, C = 0.97, 0.05, 0.2  # the synthetic device: measured = A * lut_sum + B * n_units + C


def _fake_sum(g, *_args, **_kwargs):
    h = int(hashlib.sha256(g.key().encode()).hexdigest()[:8], 16)
    return 2.0 + (h % 1000) / 50.0, 8 + h % 13  # (LUT sum ms, number of units)


class _FakeMeasure:
    """Whole-network 'measurement' of the synthetic device; fails after ``fail_after`` calls if set."""

    def __init__(self, fail_after: int | None = None, exact_sum: bool = False) -> None:
        self.calls = 0
        self.fail_after = fail_after
        self.exact_sum = exact_sum  # a device whose plain LUT sum is already right

    def __call__(self, g, *_args, **_kwargs) -> ClockStats:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        s, n = _fake_sum(g)
        cpu = s if self.exact_sum else A * s + B * n + C
        stats = lambda ms: TimingStats(ms, ms * 0.98, ms * 1.02, ms * 0.01, 30)  # noqa: E731
        return ClockStats(stats(cpu * 1.4), stats(cpu))  # wall inflated by other load; the fit must use CPU


@pytest.fixture
def fake_device(monkeypatch):
    monkeypatch.setattr(_lut, "_lut_sum", _fake_sum)
    for module in (_lut, _sources):
        monkeypatch.setattr(module, "call_overhead_ms", lambda *a, **k: 0.005)
    monkeypatch.setattr(_validate, "_lut_sum", _fake_sum)
    clear_caches()
    yield
    clear_caches()


def test_fit_recovers_a_synthetic_correction():
    rng = np.random.default_rng(1)
    s = rng.uniform(5, 50, 20)
    n = rng.integers(10, 24, 20)
    y = (A * s + B * n + C) * (1 + rng.normal(0, 0.002, 20))
    fit = fit_correction(s, n, y)
    assert fit["a"] == pytest.approx(A, abs=0.01) and fit["b_ms"] == pytest.approx(B, abs=0.01)
    assert fit["c_ms"] == pytest.approx(C, abs=0.15)
    assert fit["fit_mape_pct"] < 0.5 and fit["loo_mape_pct"] < 0.5 and fit["raw_mape_pct"] > 1
    same_n = fit_correction(s, np.full(20, 12), A * s + 0.8)  # b cannot be told from c: fixed at 0
    assert same_n["b_ms"] == 0 and same_n["a"] == pytest.approx(A) and same_n["c_ms"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="at least"):
        fit_correction(s[:3], n[:3], y[:3])
    with pytest.raises(ValueError, match="positive"):
        fit_correction(s, n, -y)


def test_validation_never_draws_a_calibration_genome(tmp_path):
    cal = {g.key() for g in calibration_genomes(SPACE, 16)}
    assert len(cal) == 16
    val, skipped = validation_genomes(SPACE, 30, 0, cal)
    assert len(val) == 30 and not {g.key() for g in val} & cal
    # even with the calibration seed itself, the calibration genomes are skipped, not validated
    val, skipped = validation_genomes(SPACE, 5, CALIBRATION_SEED, cal)
    assert skipped >= 5 and not {g.key() for g in val} & cal
    with pytest.raises(ValueError, match="calibration seed"):
        validate_lut("ort-cpu", n=2, seed=CALIBRATION_SEED, resolution=64, db=tmp_path / "v.db", progress=False,
                     calibration_genomes=4)


def test_calibration_resumes_stores_provenance_and_is_never_refitted(tmp_path, fake_device, monkeypatch):
    db = LatencyTable(tmp_path / "lut.db")
    monkeypatch.setattr(_lut, "_measure_network", _FakeMeasure(fail_after=3))
    with pytest.raises(KeyboardInterrupt):
        calibrate_network("ort-cpu", db=db, resolution=64, n_genomes=8, progress=False)
    assert len(db.network_measurements("ort-cpu", 1, 64)) == 3 and db.correction("ort-cpu", 1, 64) is None

    resumed = _FakeMeasure()
    monkeypatch.setattr(_lut, "_measure_network", resumed)
    corr = calibrate_network("ort-cpu", db=db, resolution=64, n_genomes=8, progress=False)
    assert resumed.calls == 5  # the 3 stored before the interruption were not measured again
    assert (corr.a, corr.b_ms, corr.c_ms) == pytest.approx((A, B, C), abs=1e-6)
    assert corr.clock == "thread-cpu" and corr.n_genomes == 8 and corr.seed == CALIBRATION_SEED
    assert corr.resolution == 64 and corr.threads == 1 and corr.fit_mape_pct < 1e-6
    assert "onnxruntime" in corr.versions and corr.versions["unit_protocol"] == "evicted"
    assert set(corr.genome_keys) == {g.key() for g in calibration_genomes(SPACE, 8)}

    again = _FakeMeasure()
    monkeypatch.setattr(_lut, "_measure_network", again)
    clear_caches()
    reopened = LatencyTable(tmp_path / "lut.db")
    assert calibrate_network("ort-cpu", db=reopened, resolution=64, n_genomes=20, progress=False) == corr
    assert again.calls == 0
    assert not reopened.add_correction(NetworkCorrection(**{**corr.__dict__, "a": 5.0}))  # never overwritten
    assert reopened.correction("ort-cpu", 1, 64) == corr

    g = SPACE.sample(123)
    s, n = _fake_sum(g)
    assert predict_latency(g, "ort-cpu", 64, db=reopened) == pytest.approx(A * s + B * n + C)
    assert predict_latency(g, "ort-cpu", 64, db=reopened, correct=False) == pytest.approx(s)
    assert network_correction("ort-cpu", reopened, threads=2, resolution=64) is None  # other thread count
    assert predict_latency(g, "ort-cpu", 224, db=reopened) == pytest.approx(s)  # no correction at 224


def test_a_correction_that_does_not_beat_the_plain_sum_is_not_stored(tmp_path, fake_device, monkeypatch):
    db = LatencyTable(tmp_path / "lut.db")
    monkeypatch.setattr(_lut, "_measure_network", _FakeMeasure(exact_sum=True))
    monkeypatch.setattr(_validate, "_measure_network", _FakeMeasure(exact_sum=True))
    assert calibrate_network("ort-cpu", db=db, resolution=64, n_genomes=6, progress=False) is None
    assert db.correction("ort-cpu", 1, 64) is None and len(db.network_measurements("ort-cpu", 1, 64)) == 6
    rep = validate_lut("ort-cpu", n=2, resolution=64, db=db, progress=False, calibration_genomes=6)
    assert rep.correction is None  # validate falls back to the plain sum


def test_validate_skips_calibration_genomes_and_says_what_it_applied(tmp_path, fake_device, monkeypatch):
    db = LatencyTable(tmp_path / "lut.db")
    monkeypatch.setattr(_lut, "_measure_network", _FakeMeasure())
    monkeypatch.setattr(_validate, "_measure_network", _FakeMeasure())
    first_validation_genome = SPACE.sample(np.random.default_rng(7))
    # calibrate with seed 7: the first genome validate --seed 7 would draw is a calibration genome
    calibrate_network("ort-cpu", db=db, resolution=64, n_genomes=5, seed=7, progress=False)
    with pytest.raises(ValueError, match="calibrated with"):
        validate_lut("ort-cpu", n=4, seed=7, resolution=64, db=db, progress=False)
    rep = validate_lut("ort-cpu", n=6, seed=3, resolution=64, db=db, progress=False)
    assert rep.correction is not None and first_validation_genome.key() in rep.correction.genome_keys
    assert not set(rep.keys) & set(rep.correction.genome_keys)
    assert rep.agreement(clock="cpu")["mape"] == pytest.approx(0, abs=1e-6)  # the synthetic device is exact
    assert rep.agreement(corrected=False, clock="cpu")["mape"] > 1
    assert rep.contention == pytest.approx(1.4)
    text_ = rep.summary()
    assert "network correction applied: a=0.9700" in text_ and "uncorrected LUT sum" in text_
    assert "thread CPU time" in text_ and "the machine was busy" in text_
    plain = validate_lut("ort-cpu", n=2, seed=3, resolution=64, db=db, progress=False, correct=False)
    assert plain.correction is None and "none applied" in plain.summary()


def test_report_without_cpu_clock_or_correction():
    rep = ValidationReport("torch-cuda", 224, (1.0, 2.1), (1.0, 2.0), ("a", "b"))
    assert rep.agreement(clock="cpu") is None and rep.contention is None
    assert "none applied" in rep.summary() and "within +-10%: 100%" in rep.summary()


def test_a_lut_written_before_corrections_still_loads(tmp_path):
    path = tmp_path / "old.db"
    t = LatencyTable(path)
    rec = LatencyRecord(device="ort-cpu", signature_key="k", block_type="block", signature={"type": "block"},
                        median_ms=1.0, p10_ms=0.9, p90_ms=1.1, runs=10, source=Source.MEASURED,
                        backend="onnxruntime-cpu", versions={"onnxruntime": "1.0", "call_overhead_ms": "0.00500"},
                        threads=1, created_at=dt.datetime.now(dt.timezone.utc))
    assert t.add(rec)
    stored = t.get("ort-cpu", "k")
    with t.engine.begin() as conn:  # the layout of a LUT written before the new tables existed
        conn.execute(text("DROP TABLE network_corrections"))
        conn.execute(text("DROP TABLE network_measurements"))
    assert t.correction("ort-cpu", 1, 224) is None and t.network_measurements("ort-cpu", 1, 224) == []
    t.close()
    reopened = LatencyTable(path)  # opening adds the new tables; the old rows are kept as they were
    assert reopened.get("ort-cpu", "k") == stored and reopened.correction("ort-cpu", 1, 224) is None
    with reopened.engine.connect() as conn:
        assert conn.execute(text("SELECT schema_version FROM version_info")).scalar() == 1


def test_cold_cache_protocol_settings_and_legacy_rows(tmp_path, caplog):
    from latency_lut._measure import EVICTED, _parse_size, evict_bytes, unit_protocol

    assert _parse_size("1024K") == 1 << 20 and _parse_size("32M") == 32 << 20 and _parse_size("512") == 512
    assert 8 << 20 <= evict_bytes() <= 512 << 20
    assert unit_protocol("ort-cpu") == EVICTED and unit_protocol("torch-cpu") == unit_protocol("torch-cuda") != EVICTED
    # a row written before protocols were recorded still prices units, with a warning
    db = LatencyTable(tmp_path / "old.db")
    g = SPACE.sample(5)
    for u in _lut.units_of_genome(g, 64):
        db.add(LatencyRecord(device="ort-cpu", signature_key=u.key, block_type=u.block_type, signature=u.signature,
                             median_ms=0.5, p10_ms=0.4, p90_ms=0.6, runs=30, source=Source.MEASURED,
                             backend="onnxruntime-cpu", versions={"onnxruntime": "1.0"}, threads=1,
                             created_at=dt.datetime.now(dt.timezone.utc)))
    clear_caches()
    with caplog.at_level("WARNING", logger="latency_lut"):
        raw = predict_latency(g, "ort-cpu", 64, db=db, on_demand=False, correct=False)
    assert raw == pytest.approx(0.5 * sum(u.count for u in _lut.units_of_genome(g, 64)), abs=0.1)
    assert "warm caches" in caplog.text
