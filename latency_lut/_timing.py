"""Timing primitives: warm-up, many timed runs, median and spread (used by LUT builds and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ClockStats", "TimingStats", "interleaved_timings", "single_call_timings", "summarize"]


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



@dataclass(frozen=True)
class ClockStats:
    """Wall-clock statistics, plus the calling thread's CPU time where that equals the work (else None).

    With one compute thread running on the calling thread (onnxruntime or torch on CPU with 1 thread),
    the thread's CPU time is the latency the call would have on an idle core: time spent preempted by
    other processes is not counted. ``contention`` (median wall / median CPU) says how much of the wall
    time the machine's other load added.
    """

    wall: TimingStats
    cpu: TimingStats | None = None

    @property
    def contention(self) -> float | None:
        if self.cpu is None or self.cpu.median_ms <= 0:
            return None
        return self.wall.median_ms / self.cpu.median_ms

    @property
    def latency(self) -> TimingStats:
        """The idle-core latency: CPU time where it equals the work, else wall time."""
        return self.cpu if self.cpu is not None else self.wall

    @property
    def clock(self) -> str:
        return "thread-cpu" if self.cpu is not None else "wall"


def single_call_timings(
        fn: Callable[[], object], *, warmup: int = 5, runs: int = 30, prepare: Callable[[], object] | None = None,
        cpu_clock: bool = False, inner: int = 1,
) -> ClockStats:
    """Time ``runs`` samples of ``fn``, each the mean of ``inner`` consecutive calls, in ms, on both clocks.

    ``prepare`` (untimed) runs before each sample: with ``inner=1`` whatever it does to the caches
    (evicting them, touching the input) holds for every timed call.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        if prepare is not None:
            prepare()
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(inner):
            fn()
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        wall.append((w1 - w0) / 1e6 / inner)
        cpu.append((c1 - c0) / 1e6 / inner)
    return ClockStats(summarize(wall), summarize(cpu) if cpu_clock else None)
