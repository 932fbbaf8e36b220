"""Measuring units and networks on this machine: onnxruntime CPU, torch CPU, torch CUDA.

Every measurement warms up, then takes many timed runs and keeps the median and spread.

Two protocols:

- ``batched`` (whole networks; units on torch-cpu and torch-cuda, where the cold protocol has not been
  validated; every LUT row written before protocols were recorded): consecutive calls, sub-millisecond
  ones timed in batches. Caches stay warm from one call to the next.
- ``evicted`` (units on ort-cpu): every sample is one call, preceded (untimed) by reading a
  buffer twice the size of the last-level cache and then the unit's input. This is the state a block
  meets inside a network: the rest of the network (tens of MB of weights for most genomes) has pushed
  its weights out of every cache level since its last run, and its input was just written by the block
  before it. Timed with warm caches instead, a unit misses the cost of streaming its weights from
  memory, ~0.05 ms per unit on the reference machine (AMD EPYC, 1 MiB L2, 32 MiB L3): the sum of 10-23
  units then under-predicted whole networks by 6.5% on average (up to 14%). Evicting only the L2 left
  the weights in L3 and did not help.

The fixed per-call overhead of the runtime (an almost empty graph, timed with the same protocol: with
cold caches it is ~0.06 ms instead of ~0.004 ms) is measured once per process and subtracted from each
unit; the predictor adds the warm overhead back once per network, so a sum of N units does not count N
overheads.

On a CPU device with one thread, LUT rows (and the overheads) keep the calling thread's CPU time
rather than the wall time: the two agree on an idle machine (within 0.3% for whole networks here), but
on a shared one the wall time of a multi-millisecond call also counts the time other processes held the
core, and a median over 30 samples no longer filters that out once the load passes the core count.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from search_space import check_int

from ._timing import ClockStats, TimingStats, single_call_timings

__all__ = ["BATCHED", "EVICTED", "backend_versions", "call_overhead_ms", "cpu_description", "evict_bytes",
           "measure_clocks", "measure_module", "measure_onnx_file", "unit_protocol"]

_logger = logging.getLogger(__name__)

BATCHED = "batched"
EVICTED = "evicted"
PROTOCOLS = (BATCHED, EVICTED)


def cpu_description() -> str:
    """This machine's CPU model and logical core count (as benchmark and export figures state it)."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores"


def unit_protocol(device: str) -> str:
    """The protocol LUT units are measured with on ``device``."""
    return EVICTED if device == "ort-cpu" else BATCHED  # validated on ort-cpu; torch devices keep the old one


def backend_versions(device: str) -> dict[str, str]:
    v = {"torch": torch.__version__}
    if device == "ort-cpu":
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    if device == "torch-cuda" and torch.cuda.is_available():
        v["cuda"] = str(torch.version.cuda)
        v["gpu"] = torch.cuda.get_device_name()
    return v


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG") or 0) * scale


@functools.cache
def _llc_bytes() -> int:
    """The largest data cache of CPU 0 (the last-level cache; from sysfs, 32 MiB where it cannot be read)."""
    sizes = []
    try:
        for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (idx / "type").read_text().strip() != "Instruction":
                sizes.append(_parse_size((idx / "size").read_text()))
    except (OSError, ValueError):
        sizes = []
    return max(sizes, default=0) or 32 << 20


def evict_bytes() -> int:
    """Bytes read before each ``evicted`` sample: twice the last-level cache, at least 8 MiB, at most 512 MiB."""
    return int(min(max(2 * _llc_bytes(), 8 << 20), 512 << 20))


@functools.cache
def _evict_buffer() -> np.ndarray:
    return np.ones(evict_bytes() // 4, dtype=np.float32)


def _onnx_file_callable(path: str | os.PathLike, input_shape, threads: int):
    from search_space import onnx_session

    sess = onnx_session(path, threads=threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    return (lambda: sess.run(None, {name: x})), x


def _ort_callable(module: nn.Module, input_shape, threads: int, tmpdir: str):
    from search_space import export_onnx

    path = export_onnx(module, os.path.join(tmpdir, "unit.onnx"), tuple(input_shape))
    return _onnx_file_callable(path, input_shape, threads)


def _torch_callable(module: nn.Module, input_shape, device: str, threads: int):
    dev = torch.device("cuda" if device == "torch-cuda" else "cpu")
    torch.set_num_threads(threads)
    module = module.to(dev).eval()
    x = torch.randn(1, *input_shape, device=dev)

    def run():
        with torch.inference_mode():
            module(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return run, x


def _time(fn: Callable[[], object], x, *, warmup: int, runs: int, protocol: str, cpu_clock: bool,
          target_ms: float = 1.0) -> ClockStats:
    if protocol == EVICTED:
        buf = _evict_buffer()

        def prepare() -> None:
            buf.sum()  # pushes what the last call left in every cache level out, as the rest of a network does
            x.sum()  # the input, as if the previous block had just written it

        return single_call_timings(fn, warmup=warmup, runs=runs, prepare=prepare, cpu_clock=cpu_clock)
    if protocol != BATCHED:
        raise ValueError(f"unknown measurement protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    fn()
    t0 = time.perf_counter()
    fn()
    once = (time.perf_counter() - t0) * 1e3
    inner = max(1, min(50, int(target_ms / max(once, 1e-3))))
    return single_call_timings(fn, warmup=warmup, runs=runs, cpu_clock=cpu_clock, inner=inner)


def measure_clocks(
        module: nn.Module, input_shape, *, device: str, threads: int = 1, warmup: int = 5, runs: int = 30,
        protocol: str = BATCHED,
) -> ClockStats:
    """Latency of one forward of ``module`` (batch 1) on a measured device, in ms, overhead not removed.

    The calling thread's CPU time is recorded too where it equals the work: a CPU device with one thread,
    where onnxruntime and torch compute on the calling thread. It is what an idle core would take; the
    wall time also counts whatever other processes on a shared machine took of the core.
    """
    for name, value, least in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        check_int(name, value, lo=least, numpy=True, what=f"an integer >= {least}")
    cpu_clock = threads == 1 and device in ("ort-cpu", "torch-cpu")
    if device == "ort-cpu":
        with tempfile.TemporaryDirectory() as tmp:
            fn, x = _ort_callable(module, input_shape, threads, tmp)
            return _time(fn, x, warmup=warmup, runs=runs, protocol=protocol, cpu_clock=cpu_clock)
    if device in ("torch-cpu", "torch-cuda"):
        fn, x = _torch_callable(module, input_shape, device, threads)
        return _time(fn, x, warmup=warmup, runs=runs, protocol=protocol, cpu_clock=cpu_clock)
    raise ValueError(f"device {device!r} is not measured on this machine")


def measure_onnx_file(path: str | os.PathLike, input_shape, *, threads: int = 1, warmup: int = 5, runs: int = 30
                      ) -> ClockStats:
    """Latency of one batch-1 call of an existing ONNX file on ``ort-cpu`` (the protocol ``validate`` uses for
    whole networks), in ms, overhead included: what a user of that file gets from onnxruntime here."""
    fn, x = _onnx_file_callable(path, tuple(input_shape), threads)
    return _time(fn, x, warmup=warmup, runs=runs, protocol=BATCHED, cpu_clock=threads == 1)


def measure_module(
        module: nn.Module, input_shape, *, device: str, threads: int = 1, warmup: int = 5, runs: int = 30,
        protocol: str = BATCHED,
) -> TimingStats:
    """Latency of one forward of ``module`` (batch 1) on a measured device, in ms, overhead not removed."""
    return measure_clocks(module, input_shape, device=device, threads=threads, warmup=warmup, runs=runs,
                          protocol=protocol).wall


class _Empty(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.0


@functools.cache
def call_overhead_ms(device: str, threads: int = 1, protocol: str = BATCHED) -> float:
    """Median time of a call that does (almost) nothing, under ``protocol``: the runtime's fixed per-call cost.

    On the clock LUT rows use (``ClockStats.latency``: the thread's CPU time on one-thread CPU devices).
    """
    stats = measure_clocks(_Empty(), (8, 4, 4), device=device, threads=threads, warmup=20, runs=200,
                           protocol=protocol).latency
    _logger.debug("%s call overhead (%s): %.4f ms", device, protocol, stats.median_ms)
    return stats.median_ms
