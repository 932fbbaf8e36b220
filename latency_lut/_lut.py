"""Building LUTs and predicting latency from them.

A network's latency is the sum of its units' LUT entries plus a once-per-network term (units on the CPU
devices are timed with cold caches, see ``_measure``). How a missing row is made, what a stored row is
worth, and what the once-per-network term is are the device's business: each device is a latency source
(``_sources``), and nothing here asks which kind it is. Optionally, a measured device gets a
*network correction* ``a * sum + b * n_units + c``: fitted on calibration genomes (a seed of their own,
never validated on) measured end to end, stored in the LUT with its provenance, and applied by
``predict_latency`` whenever the LUT holds one for the device, thread count and resolution. It is
created only on request (``calibrate_network``, ``build_lut(calibrate=True)``,
``validate_lut(calibration_genomes=N)``), and stored only where it beats the plain sum out of sample.
On ort-cpu here the cold-cache unit protocol alone brought the plain sum within ~1.3% MAPE of whole
networks, and a correction fitted on 16 genomes under a drifting machine load did more harm than good.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from torch import nn

from search_space import Genome, SearchSpace, build_model, check_int, reparameterize

from ._db import LatencyTable, NetworkCorrection, NetworkMeasurement, open_table
from ._devices import get_device, registered_device
from ._errors import UnknownDeviceError
from ._measure import BATCHED, backend_versions, call_overhead_ms, evict_bytes, measure_clocks, unit_protocol
from ._signatures import Unit, enumerate_space, signature_key, units_of_genome
from ._sources import MULTI_THREAD_REFUSAL, LatencySource, positive_int
from ._timing import ClockStats

__all__ = ["CALIBRATION_SEED", "DEFAULT_CALIBRATION_GENOMES", "MULTI_THREAD_REFUSAL", "build_lut", "calibrate_network",
           "calibration_genomes", "check_threads", "fit_correction", "network_correction", "predict_latency",
           "predict_model_latency", "unit_latency"]

#: Seed of the calibration genomes a network correction is fitted on; ``validate`` refuses to use it.
CALIBRATION_SEED = 917_000_017
DEFAULT_CALIBRATION_GENOMES = 16
MIN_CALIBRATION_GENOMES = 4

_logger = logging.getLogger(__name__)


def check_threads(device: str | LatencySource, threads: Any) -> int:
    """``threads`` if LUT rows of ``device`` may be measured or summed at it; else a ValueError saying why.

    Every device needs a positive thread count; ort-cpu needs exactly 1 (see ``MULTI_THREAD_REFUSAL``).
    A name that is not a registered device gets the plain check (it may be a remote device).
    """
    src = device if isinstance(device, LatencySource) else registered_device(device)
    return positive_int("threads (--threads)", threads) if src is None else src.check_threads(threads)


def _check_timing(runs: Any, warmup: Any) -> None:
    positive_int("runs (--runs)", runs)
    check_int("warmup", warmup, lo=0, numpy=True)


def unit_latency(unit: Unit, device: str | LatencySource, *, db: LatencyTable | str | None = None,
                 threads: int = 1, on_demand: bool = True, runs: int = 30, warmup: int = 5) -> float:
    """The LUT latency of one unit (ms, overhead removed); missing entries measured/predicted on demand."""
    src = device if isinstance(device, LatencySource) else get_device(device, allow_remote=True)
    src.check_threads(threads)
    table = open_table(db)
    rec = table.get(src.name, unit.key)
    if rec is None:
        if not (on_demand or src.always_on_demand):
            raise src.missing_row_error(table, unit)
        _check_timing(runs, warmup)
        rec = src.new_record(unit.signature, threads=threads, runs=runs, warmup=warmup)
        table.add(rec)
    return src.unit_ms(table, unit, rec, threads=threads)


def network_correction(device: str | LatencySource, db: LatencyTable | str | None = None, *, threads: int = 1,
                       resolution: int = 224) -> NetworkCorrection | None:
    """The network correction stored for ``device`` at ``threads`` and ``resolution``, or None."""
    src = device if isinstance(device, LatencySource) else registered_device(device)
    if src is None:  # only measured devices have corrections, and they are all registered
        return None
    return src.correction(open_table(db), threads=threads, resolution=resolution)


def _lut_sum(genome: Genome, dev: LatencySource, resolution: int, table: LatencyTable, *, num_classes: int,
             threads: int, on_demand: bool) -> tuple[float, int]:
    """The uncorrected LUT latency (units plus one network offset, ms) and the number of units."""
    units = units_of_genome(genome, resolution, num_classes)
    total = sum(u.count * unit_latency(u, dev, db=table, threads=threads, on_demand=on_demand) for u in units)
    return total + dev.network_offset(table, threads), sum(u.count for u in units)


def predict_latency(genome: Genome, device: str, resolution: int = 224, *, db: LatencyTable | str | None = None,
                    num_classes: int = 1000, threads: int = 1, on_demand: bool = True, correct: bool = True) -> float:
    """Latency of ``genome``'s deployed network at ``resolution`` on ``device`` (ms), summed from the LUT.

    On a measured device with a stored network correction (see :func:`calibrate_network`) for ``threads``
    and ``resolution``, the sum goes through it unless ``correct`` is False. Corrections are never created
    here (that measures whole networks): ``build`` of the whole space and ``validate`` create them.
    """
    dev = get_device(device, allow_remote=True)
    dev.check_threads(threads)
    table = open_table(db)
    dev.check_known(table)
    total, n_units = _lut_sum(genome, dev, resolution, table, num_classes=num_classes, threads=threads,
                              on_demand=on_demand)
    return dev.correct(table, total, n_units, threads=threads, resolution=resolution) if correct else total


# -- network correction ------------------------------------------------------------------------------
def fit_correction(lut_sum_ms: Sequence[float], n_units: Sequence[int],
                   measured_ms: Sequence[float]) -> dict[str, float]:
    """Fit ``measured ~= a * lut_sum + b * n_units + c`` minimising squared *relative* error.

    Returns a, b_ms, c_ms, and the in-sample MAPE / max error, the leave-one-out MAPE and the uncorrected
    sum's MAPE (percent). Where every genome has the same number of units, b is fixed at 0 (it could not
    be told apart from c).
    """
    s = np.asarray(lut_sum_ms, dtype=np.float64)
    n = np.asarray(n_units, dtype=np.float64)
    y = np.asarray(measured_ms, dtype=np.float64)
    if not (s.shape == n.shape == y.shape) or s.ndim != 1:
        raise ValueError("fit_correction: lut_sum_ms, n_units and measured_ms must be 1-D and of equal length")
    if len(y) < MIN_CALIBRATION_GENOMES:
        raise ValueError(f"fit_correction: needs at least {MIN_CALIBRATION_GENOMES} networks, got {len(y)}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(y)) and np.all(y > 0) and np.all(s > 0)):
        raise ValueError("fit_correction: LUT sums and measured latencies must be finite and positive")
    use_n = bool(np.ptp(n) > 0)
    X = np.column_stack([s, n, np.ones_like(s)] if use_n else [s, np.ones_like(s)])

    def solve(idx: np.ndarray) -> np.ndarray:
        w, *_ = np.linalg.lstsq(X[idx] / y[idx, None], np.ones(idx.sum()), rcond=None)
        return w

    w = solve(np.ones(len(y), dtype=bool))
    a, b, c = (w[0], w[1], w[2]) if use_n else (w[0], 0.0, w[1])
    if not a > 0:
        raise ValueError(f"fit_correction: degenerate fit (a={a:.4g}); the calibration genomes are too alike")
    rel = np.abs(X @ w - y) / y
    loo = []
    for i in range(len(y)):
        keep = np.ones(len(y), dtype=bool)
        keep[i] = False
        loo.append(abs(float(X[i] @ solve(keep)) - y[i]) / y[i])
    return {"a": float(a), "b_ms": float(b), "c_ms": float(c), "fit_mape_pct": float(rel.mean() * 100),
            "fit_max_pct": float(rel.max() * 100), "loo_mape_pct": float(np.mean(loo) * 100),
            "raw_mape_pct": float(np.mean(np.abs(s - y) / y) * 100)}


def calibration_genomes(space: SearchSpace, n: int, seed: int = CALIBRATION_SEED) -> list[Genome]:
    """``n`` distinct genomes of ``space`` drawn with ``seed`` (the genomes a network correction is fitted on)."""
    rng = np.random.default_rng(seed)
    out: dict[str, Genome] = {}
    for _ in range(50 * max(n, 1)):
        if len(out) >= n:
            break
        g = space.sample(rng)
        out.setdefault(g.key(), g)
    return list(out.values())


def _measure_network(genome: Genome, device: str, resolution: int, *, threads: int, runs: int, warmup: int,
                     num_classes: int) -> ClockStats:
    """Whole deployed network, end to end (same protocol as ``validate``)."""
    if genome.resolution != resolution:
        genome = genome.with_resolution(resolution)
    model = reparameterize(build_model(genome, num_classes=num_classes).eval())
    return measure_clocks(model, (3, resolution, resolution), device=device, threads=threads, runs=runs,
                          warmup=warmup, protocol=BATCHED)


def calibrate_network(device: str, *, db: LatencyTable | str | None = None, space: SearchSpace | None = None,
                      resolution: int = 224, threads: int = 1, n_genomes: int = DEFAULT_CALIBRATION_GENOMES,
                      seed: int = CALIBRATION_SEED, runs: int = 30, warmup: int = 5, num_classes: int = 1000,
                      progress: bool = True) -> NetworkCorrection | None:
    """The network correction of a measured ``device`` at ``threads`` and ``resolution``; created if missing.

    Draws ``n_genomes`` calibration genomes of ``space`` (default ``SearchSpace(resolution)``) with ``seed``,
    prices each from the LUT (missing unit rows measured on demand) and measures it end to end, then fits
    :func:`fit_correction` and stores the result. Resumable: each network measurement is committed as it
    is taken and skipped on the next run; a stored correction is returned as it is, never refitted.
    A fit whose leave-one-out error is not below the plain sum's error on the same genomes is not stored
    (None is returned): the plain sum is then the better predictor.
    The fit's target is the calling thread's CPU time where it is recorded (one-thread CPU devices: other
    load on a shared machine does not leak into the correction), else the wall time.
    """
    dev = get_device(device)
    if not dev.measures_networks:
        raise UnknownDeviceError(f"a network correction measures whole networks, so it needs a device measured "
                                 f"here (ort-cpu, torch-cpu, torch-cuda), not {device!r}")
    dev.check_threads(threads)
    _check_timing(runs, warmup)
    table = open_table(db)
    stored = network_correction(dev.name, table, threads=threads, resolution=resolution)
    if stored is not None:
        return stored
    if n_genomes < MIN_CALIBRATION_GENOMES:
        raise ValueError(f"a network correction needs at least {MIN_CALIBRATION_GENOMES} calibration genomes, "
                         f"got {n_genomes}")
    space = space or SearchSpace(resolution=resolution)
    genomes = calibration_genomes(space, n_genomes, seed)
    if len(genomes) < MIN_CALIBRATION_GENOMES:
        raise ValueError(f"the search space has only {len(genomes)} distinct genomes; a network correction needs "
                         f"at least {MIN_CALIBRATION_GENOMES}")
    have = {m.genome_key: m for m in table.network_measurements(dev.name, threads, resolution)}
    todo = [g for g in genomes if g.key() not in have]
    _logger.info("%s: network correction at %d px, %d thread(s): %d calibration genomes (seed %d), %d already "
                 "measured in %s", dev.name, resolution, threads, len(genomes), seed, len(genomes) - len(todo),
                 table.safe_url)
    from tqdm.auto import tqdm

    for g in tqdm(todo, desc=f"calibrate {dev.name}", unit="net", disable=not progress):
        lut_sum, n_units = _lut_sum(g, dev, resolution, table, num_classes=num_classes, threads=threads,
                                    on_demand=True)
        clocks = _measure_network(g, dev.name, resolution, threads=threads, runs=runs, warmup=warmup,
                                  num_classes=num_classes)
        table.add_network_measurement(NetworkMeasurement(
            device=dev.name, threads=threads, resolution=resolution, role="calibration", seed=seed,
            genome_key=g.key(), genome=g.to_dict(), n_units=n_units, lut_sum_ms=lut_sum,
            median_ms=clocks.wall.median_ms, p10_ms=clocks.wall.p10_ms, p90_ms=clocks.wall.p90_ms,
            cpu_median_ms=None if clocks.cpu is None else clocks.cpu.median_ms, runs=clocks.wall.runs,
            versions=backend_versions(dev.name), created_at=_dt.datetime.now(_dt.timezone.utc),
        ))
    stored_now = {m.genome_key: m for m in table.network_measurements(dev.name, threads, resolution)}
    ms = [stored_now[g.key()] for g in genomes]
    cpu = all(m.cpu_median_ms is not None for m in ms)
    target = [m.cpu_median_ms if cpu else m.median_ms for m in ms]
    fit = fit_correction([m.lut_sum_ms for m in ms], [m.n_units for m in ms], target)
    contention = [m.median_ms / m.cpu_median_ms for m in ms if m.cpu_median_ms]
    from search_space import __version__

    versions = dict(backend_versions(dev.name), repnas=__version__, unit_protocol=unit_protocol(dev.name),
                    evict_bytes=str(evict_bytes()), call_overhead_ms=f"{call_overhead_ms(dev.name, threads):.5f}",
                    num_classes=str(num_classes), loadavg_1min=f"{os.getloadavg()[0]:.2f}")
    if contention:
        versions["median_wall_over_cpu"] = f"{float(np.median(contention)):.3f}"
    if fit["loo_mape_pct"] >= fit["raw_mape_pct"]:
        _logger.info("%s: network correction not stored: out of sample it does no better than the plain LUT sum "
                     "(leave-one-out MAPE %.2f%% vs %.2f%% on %d calibration genomes)", dev.name, fit["loo_mape_pct"],
                     fit["raw_mape_pct"], len(ms))
        return None
    corr = NetworkCorrection(
        device=dev.name, threads=threads, resolution=resolution, a=fit["a"], b_ms=fit["b_ms"], c_ms=fit["c_ms"],
        clock="thread-cpu" if cpu else "wall", n_genomes=len(ms), seed=seed, fit_mape_pct=fit["fit_mape_pct"],
        fit_max_pct=fit["fit_max_pct"], loo_mape_pct=fit["loo_mape_pct"], raw_mape_pct=fit["raw_mape_pct"],
        genome_keys=tuple(m.genome_key for m in ms), versions=versions,
        created_at=_dt.datetime.now(_dt.timezone.utc),
    )
    if not table.add_correction(corr):
        _logger.info("%s: a network correction was stored meanwhile by another writer; keeping it", dev.name)
    stored = network_correction(dev.name, table, threads=threads, resolution=resolution)
    assert stored is not None
    _logger.info("%s network correction: %s", dev.name, stored.describe())
    return stored


def predict_model_latency(module: nn.Module, device: str, input_size: Sequence[int] = (3, 224, 224), *,
                          threads: int = 1, runs: int = 30) -> float:
    """Latency of any ``nn.Module``'s deployed form (ms): measured end to end, or predicted by the cost model."""
    dev = get_device(device)
    positive_int("threads (--threads)", threads)  # one end-to-end measurement: any thread count is right
    _check_timing(runs, 0)
    deployed = reparameterize(copy.deepcopy(module).eval())
    return dev.model_ms(deployed, tuple(input_size), threads=threads, runs=runs)


def _signatures_to_do(
        device: str, table: LatencyTable, *, space: SearchSpace | None = None, genomes: Iterable[Genome] | None = None,
        resolution: int | None = 224, num_classes: int = 1000,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The signatures of ``genomes`` (or of ``space``, default the whole space at ``resolution``), each once,
    and those of them that ``device`` has no row for in ``table``. ``resolution`` None: each genome at its own
    resolution (the whole space at 224)."""
    if genomes is not None:
        sigs: dict[str, dict[str, Any]] = {}
        for g in genomes:
            for u in units_of_genome(g, resolution, num_classes):
                sigs.setdefault(u.key, u.signature)
        todo_all = list(sigs.values())
    else:
        space = space or SearchSpace(resolution=224 if resolution is None else resolution)
        todo_all = list(enumerate_space(space, num_classes))
    have = table.keys(device)
    return todo_all, [s for s in todo_all if signature_key(s) not in have]


def build_lut(device: str, *, db: LatencyTable | str | None = None, space: SearchSpace | None = None,
              genomes: Iterable[Genome] | None = None, resolution: int | None = 224, num_classes: int = 1000,
              threads: int = 1, runs: int = 30, warmup: int = 5, progress: bool = True,
              calibrate: bool = False, calibration_genomes: int = DEFAULT_CALIBRATION_GENOMES) -> dict[str, int]:
    """Fill the LUT for ``device`` with every signature of ``space`` (or of ``genomes``); resumable.

    Rows already present are skipped; each new row is committed as soon as it is measured, so a build
    killed at any point loses at most the row in flight. With ``calibrate`` (measured devices) the build
    ends with :func:`calibrate_network`, itself resumable and skipped when a correction is stored.
    ``resolution`` None takes each of ``genomes`` at its own resolution (the whole space at 224).
    Every argument is checked before the LUT is opened: a refused call stores nothing and creates no file.
    """
    dev = get_device(device)
    dev.check_threads(threads)
    _check_timing(runs, warmup)
    if genomes is not None:
        genomes = list(genomes)
    if calibrate and resolution is None:
        resolution = 224
    table = open_table(db)
    todo_all, todo = _signatures_to_do(dev.name, table, space=space, genomes=genomes, resolution=resolution,
                                       num_classes=num_classes)
    _logger.info("%s: %d signatures, %d already in %s, %d to %s", dev.name, len(todo_all), len(todo_all) - len(todo),
                 table.safe_url, len(todo), dev.build_verb)
    from tqdm.auto import tqdm

    added = 0
    for sig in tqdm(todo, desc=f"LUT {dev.name}", unit="block", disable=not progress):
        if table.add(dev.new_record(sig, threads=threads, runs=runs, warmup=warmup)):
            added += 1
    if calibrate:
        calibrate_network(dev.name, db=table, space=space, resolution=resolution, threads=threads,
                          n_genomes=calibration_genomes, runs=runs, warmup=warmup, num_classes=num_classes,
                          progress=progress)
    return {"total": len(todo_all), "skipped": len(todo_all) - len(todo), "added": added}
