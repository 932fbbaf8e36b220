"""Measuring units on this machine: onnxruntime CPU, torch CPU, torch CUDA.

Every measurement warms up, then takes many timed runs and keeps the median and spread. Calls that
take well under a millisecond are timed in batches of consecutive calls. The fixed per-call
overhead of the runtime (timing an empty graph) is measured once per process and subtracted from
each unit, then added back once per network by the predictor, so a sum of N units does not count
N overheads.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._timing import TimingStats, interleaved_timings

__all__ = ["backend_versions", "call_overhead_ms", "measure_module"]

_logger = logging.getLogger(__name__)


def backend_versions(device: str) -> dict[str, str]:
    v = {"torch": torch.__version__}
    if device == "ort-cpu":
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    if device == "torch-cuda" and torch.cuda.is_available():
        v["cuda"] = str(torch.version.cuda)
        v["gpu"] = torch.cuda.get_device_name()
    return v


def _ort_callable(module: nn.Module, input_shape, threads: int, tmpdir: str) -> Callable[[], object]:
    from search_space._export import export_onnx, onnx_session

    path = export_onnx(module, os.path.join(tmpdir, "unit.onnx"), tuple(input_shape))
    sess = onnx_session(path, threads=threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    return lambda: sess.run(None, {name: x})


def _torch_callable(module: nn.Module, input_shape, device: str, threads: int) -> Callable[[], object]:
    dev = torch.device("cuda" if device == "torch-cuda" else "cpu")
    torch.set_num_threads(threads)
    module = module.to(dev).eval()
    x = torch.randn(1, *input_shape, device=dev)

    def run():
        with torch.inference_mode():
            module(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return run


def _time(fn: Callable[[], object], *, warmup: int, runs: int, target_ms: float = 1.0) -> TimingStats:
    fn()
    t0 = time.perf_counter()
    fn()
    once = (time.perf_counter() - t0) * 1e3
    inner = max(1, min(50, int(target_ms / max(once, 1e-3))))
    return interleaved_timings([fn], warmup=warmup, runs=runs, inner=inner)[0]


def measure_module(
        module: nn.Module, input_shape, *, device: str, threads: int = 1, warmup: int = 5, runs: int = 30,
) -> TimingStats:
    """Latency of one forward of ``module`` (batch 1) on a measured device, in ms, overhead not removed."""
    if device == "ort-cpu":
        with tempfile.TemporaryDirectory() as tmp:
            return _time(_ort_callable(module, input_shape, threads, tmp), warmup=warmup, runs=runs)
    if device in ("torch-cpu", "torch-cuda"):
        return _time(_torch_callable(module, input_shape, device, threads), warmup=warmup, runs=runs)
    raise ValueError(f"device {device!r} is not measured on this machine")


class _Empty(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.0


@functools.cache
def call_overhead_ms(device: str, threads: int = 1) -> float:
    """Median time of a call that does (almost) nothing: the runtime's fixed per-call cost."""
    stats = measure_module(_Empty(), (8, 4, 4), device=device, threads=threads, warmup=20, runs=200)
    _logger.debug("%s call overhead: %.4f ms", device, stats.median_ms)
    return stats.median_ms
