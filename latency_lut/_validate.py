"""``validate``: LUT predictions against end-to-end measurements of whole deployed networks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from search_space import SearchSpace, build_model, reparameterize

from ._db import LatencyTable
from ._devices import get_device
from ._errors import UnknownDeviceError
from ._lut import _table, predict_latency
from ._measure import measure_module

__all__ = ["ValidationReport", "validate_lut"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationReport:
    device: str
    resolution: int
    predicted_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]
    keys: tuple[str, ...]

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

    def summary(self) -> str:
        return (f"{self.device} @ {self.resolution}: {len(self.keys)} random genomes; "
                f"within +-10%: {self.within_10:.0%}, within +-5%: {self.within_5:.0%}, "
                f"MAPE {self.mape:.1f}%, Spearman {self.spearman:.3f}")


def validate_lut(device: str = "ort-cpu", *, n: int = 30, seed: int = 0, resolution: int = 224,
                 db: LatencyTable | str | None = None, threads: int = 1, runs: int = 30,
                 progress: bool = True) -> ValidationReport:
    """Sample ``n`` genomes, price each from the LUT (filling missing rows) and measure it end to end."""
    dev = get_device(device)
    if dev.kind != "measured":
        raise UnknownDeviceError(f"validate measures whole networks, so it needs a device measured here "
                                 f"(ort-cpu, torch-cpu, torch-cuda), not {device!r}")
    table = _table(db)
    space = SearchSpace(resolution=resolution)
    rng = np.random.default_rng(seed)
    from tqdm.auto import tqdm

    pred, meas, keys = [], [], []
    for _ in tqdm(range(n), desc=f"validate {device}", unit="net", disable=not progress):
        g = space.sample(rng)
        pred.append(predict_latency(g, device, resolution, db=table, threads=threads))
        model = reparameterize(build_model(g).eval())
        meas.append(measure_module(model, (3, resolution, resolution), device=device, threads=threads,
                                   runs=runs).median_ms)
        keys.append(g.key())
        _logger.debug("%s predicted %.3f measured %.3f", g.key(), pred[-1], meas[-1])
    return ValidationReport(device, resolution, tuple(pred), tuple(meas), tuple(keys))
