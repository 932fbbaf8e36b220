"""``validate``: LUT predictions against end-to-end measurements of whole deployed networks.

The genomes validated are drawn with ``seed``; the network correction (if one is applied) was fitted on
calibration genomes drawn with a seed of its own, and any genome it was fitted on is skipped here, so a
correction is never validated on the networks it learnt from. The report gives the corrected and the
uncorrected LUT sums, and where the device runs on the calling thread (CPU, one thread) it compares them
with the thread's CPU time too, which other processes on a shared machine cannot inflate.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from search_space import Genome, SearchSpace

from ._db import LatencyTable, NetworkCorrection, open_table
from ._devices import get_device
from ._errors import UnknownDeviceError
from ._lut import (
    CALIBRATION_SEED,
    _check_timing,
    _lut_sum,
    _measure_network,
    calibrate_network,
    network_correction,
)
from ._measure import BATCHED
from ._signatures import units_of_genome
from ._sources import positive_int

__all__ = ["ValidationReport", "validate_lut", "validation_genomes"]

_logger = logging.getLogger(__name__)


def _agreement(pred, meas) -> dict[str, float]:
    from scipy.stats import spearmanr

    p, m = np.asarray(pred, dtype=np.float64), np.asarray(meas, dtype=np.float64)
    e = (p - m) / m
    return {"within_10": float(np.mean(np.abs(e) <= 0.10)), "within_5": float(np.mean(np.abs(e) <= 0.05)),
            "mape": float(np.mean(np.abs(e)) * 100), "bias": float(np.mean(e) * 100),
            "spearman": float(spearmanr(p, m).statistic) if len(p) > 1 else float("nan")}


def _line(a: dict[str, float]) -> str:
    return (f"within +-10%: {a['within_10']:.0%}, within +-5%: {a['within_5']:.0%}, MAPE {a['mape']:.1f}%, "
            f"Spearman {a['spearman']:.3f}, mean error {a['bias']:+.1f}%")


@dataclass(frozen=True)
class ValidationReport:
    """``predicted_ms`` is what ``predict_latency`` returns (corrected when ``correction`` is set);
    ``raw_predicted_ms`` the plain LUT sums; ``measured_ms`` wall-clock medians; ``measured_cpu_ms`` the
    calling thread's CPU-time medians (one-thread CPU devices, else None)."""

    device: str
    resolution: int
    predicted_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]
    keys: tuple[str, ...]
    raw_predicted_ms: tuple[float, ...] | None = None
    measured_cpu_ms: tuple[float, ...] | None = None
    correction: NetworkCorrection | None = None
    seed: int = 0
    skipped_calibration: int = 0
    unit_protocols: tuple[tuple[str, int], ...] = ()

    @property
    def rel_errors(self) -> np.ndarray:
        p, m = np.asarray(self.predicted_ms), np.asarray(self.measured_ms)
        return (p - m) / m

    @property
    def within_10(self) -> float:
        return float(np.mean(np.abs(self.rel_errors) <= 0.10))

    @property
    def within_5(self) -> float:
        return float(np.mean(np.abs(self.rel_errors) <= 0.05))

    @property
    def mape(self) -> float:
        return float(np.mean(np.abs(self.rel_errors)) * 100)

    @property
    def spearman(self) -> float:
        from scipy.stats import spearmanr

        return float(spearmanr(self.predicted_ms, self.measured_ms).statistic)

    def agreement(self, *, corrected: bool = True, clock: str = "wall") -> dict[str, float] | None:
        """within_10, within_5, mape, bias (mean signed error, %), spearman; None where not available."""
        pred = self.predicted_ms if corrected else (self.raw_predicted_ms or self.predicted_ms)
        meas = self.measured_ms if clock == "wall" else self.measured_cpu_ms
        return None if meas is None else _agreement(pred, meas)

    @property
    def contention(self) -> float | None:
        """Median over networks of wall / CPU time: ~1.0 on an idle machine, above it when others took the CPU."""
        if not self.measured_cpu_ms:
            return None
        return float(np.median(np.asarray(self.measured_ms) / np.asarray(self.measured_cpu_ms)))

    def summary(self) -> str:
        what = "LUT sum + network correction" if self.correction is not None else "LUT sum (no network correction)"
        lines = [f"{self.device} @ {self.resolution}: {len(self.keys)} random genomes (seed {self.seed}); {what}: "
                 f"{_line(self.agreement())}"]
        if self.correction is not None:
            lines.append(f"  network correction applied: {self.correction.describe()}")
            lines.append(f"  {self.skipped_calibration} sampled genome(s) skipped as calibration genomes; "
                         "none validated here was calibrated on")
            if self.raw_predicted_ms is not None:
                lines.append(f"  uncorrected LUT sum: {_line(self.agreement(corrected=False))}")
        else:
            lines.append("  network correction: none applied (plain LUT sums; a correction is only applied where one "
                         "is stored for the device, thread count and resolution)")
        cpu = self.agreement(clock="cpu")
        if cpu is not None:
            c = self.contention
            busy = ("idle enough: wall and CPU figures agree" if c is not None and c < 1.03 else
                    "the machine was busy: wall times include time other processes took; the CPU-time figures "
                    "are what an idle core would show")
            lines.append(f"  against thread CPU time: {_line(cpu)}"
                         + (f"; uncorrected {_line(self.agreement(corrected=False, clock='cpu'))}"
                            if self.correction is not None and self.raw_predicted_ms is not None else ""))
            lines.append(f"  median wall/CPU time {c:.2f} ({busy})")
        if self.unit_protocols:
            lines.append("  LUT rows used, by measurement protocol: "
                         + ", ".join(f"{p} {n}" for p, n in self.unit_protocols))
        return "\n".join(lines)


def validation_genomes(space: SearchSpace, n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()
                       ) -> tuple[list[Genome], int]:
    """``n`` genomes of ``space`` drawn with ``seed``, skipping any whose key is in ``exclude``.

    Returns the genomes and how many draws were skipped.
    """
    rng = np.random.default_rng(seed)
    out: list[Genome] = []
    skipped = 0
    for _ in range(50 * max(n, 1)):
        if len(out) >= n:
            break
        g = space.sample(rng)
        if g.key() in exclude:
            skipped += 1
            continue
        out.append(g)
    if len(out) < n:
        raise ValueError(f"could not draw {n} validation genomes outside the {len(exclude)} calibration genomes")
    return out, skipped


def validate_lut(device: str = "ort-cpu", *, n: int = 30, seed: int = 0, resolution: int = 224,
                 db: LatencyTable | str | None = None, threads: int = 1, runs: int = 30,
                 progress: bool = True, correct: bool = True,
                 calibration_genomes: int = 0,
                 calibration_seed: int = CALIBRATION_SEED) -> ValidationReport:
    """Sample ``n`` genomes, price each from the LUT (filling missing rows) and measure it end to end.

    With ``correct`` the device's network correction is applied if the LUT holds one; with
    ``calibration_genomes`` (e.g. 16) one is calibrated first where none is stored, on genomes drawn with
    ``calibration_seed`` (it is stored only if it beats the plain sum out of sample).
    """
    dev = get_device(device)
    positive_int("the number of genomes (--n)", n)
    dev.check_threads(threads)
    if not dev.measures_networks:
        raise UnknownDeviceError(f"validate measures whole networks, so it needs a device measured here "
                                 f"(ort-cpu, torch-cpu, torch-cuda), not {device!r}")
    _check_timing(runs, 5)
    if calibration_genomes:
        positive_int("calibration_genomes", calibration_genomes)
    space = SearchSpace(resolution=resolution)
    table = open_table(db)
    corr = network_correction(dev.name, table, threads=threads, resolution=resolution) if correct else None
    if correct and corr is None and calibration_genomes:
        if seed == calibration_seed:
            raise ValueError(f"validate --seed {seed} is the calibration seed; pick another seed")
        corr = calibrate_network(dev.name, db=table, space=space, resolution=resolution, threads=threads,
                                 n_genomes=calibration_genomes, seed=calibration_seed, runs=runs, progress=progress)
    if corr is not None and seed == corr.seed:
        raise ValueError(f"validate --seed {seed} is the seed the stored network correction was calibrated with; "
                         "pick another seed")
    exclude = {m.genome_key for m in table.network_measurements(dev.name, threads, resolution)}
    if corr is not None:
        exclude |= set(corr.genome_keys)
    genomes, skipped = validation_genomes(space, n, seed, exclude)
    from tqdm.auto import tqdm

    pred, raw, meas, cpu, keys = [], [], [], [], []
    protocols: Counter[str] = Counter()
    for g in tqdm(genomes, desc=f"validate {device}", unit="net", disable=not progress):
        total, n_units = _lut_sum(g, dev, resolution, table, num_classes=1000, threads=threads, on_demand=True)
        raw.append(total)
        pred.append(corr.apply(total, n_units) if corr is not None else total)
        for u in units_of_genome(g, resolution):
            rec = table.get(dev.name, u.key)
            protocols[rec.versions.get("protocol", f"{BATCHED} (legacy)") if rec else "no row"] += u.count
        clocks = _measure_network(g, device, resolution, threads=threads, runs=runs, warmup=5, num_classes=1000)
        meas.append(clocks.wall.median_ms)
        cpu.append(None if clocks.cpu is None else clocks.cpu.median_ms)
        keys.append(g.key())
        _logger.debug("%s predicted %.3f (raw %.3f) measured %.3f", g.key(), pred[-1], raw[-1], meas[-1])
    return ValidationReport(
        device, resolution, tuple(pred), tuple(meas), tuple(keys), raw_predicted_ms=tuple(raw),
        measured_cpu_ms=tuple(cpu) if cpu and all(c is not None for c in cpu) else None, correction=corr,
        seed=seed, skipped_calibration=skipped, unit_protocols=tuple(sorted(protocols.items())),
    )
