"""Timing primitives: warm-up, many timed runs, median and spread (used by LUT builds and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TimingStats", "interleaved_timings", "summarize"]


@dataclass(frozen=True)
class TimingStats:
    """Latency statistics in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    runs: int

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms


def summarize(samples_ms: Sequence[float]) -> TimingStats:
    a = np.asarray(samples_ms, dtype=np.float64)
    q10, q25, q50, q75, q90 = np.percentile(a, [10, 25, 50, 75, 90])
    return TimingStats(float(q50), float(q10), float(q90), float(q75 - q25), int(a.size))


def interleaved_timings(
        fns: Sequence[Callable[[], object]], *, warmup: int = 10, runs: int = 50, inner: int = 1,
) -> list[TimingStats]:
    """Time several callables in round-robin order so that machine drift hits them all alike.

    Each sample is the mean of ``inner`` consecutive calls (for sub-millisecond work), in ms.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[i].append((time.perf_counter() - t0) * 1e3 / inner)
    return [summarize(s) for s in samples]

