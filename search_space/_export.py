"""ONNX export of deployed models and onnxruntime inference (onnx/onnxruntime imported lazily)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["export_onnx", "onnx_session", "onnx_forward"]

_logger = logging.getLogger(__name__)
OPSET = 17


def export_onnx(
        model: nn.Module,
        path: str | os.PathLike,
        input_size: Sequence[int] = (3, 224, 224),
        *,
        batch_size: int = 1,
        opset: int = OPSET,
) -> str:
    """Export ``model`` (as it is: re-parameterize it first for the deployed form) to one ONNX file.

    The TorchScript-based exporter is used (fast and exact for these models); where it is missing or
    fails, torch's dynamo exporter is tried.
    """
    path = os.fspath(path)
    was_training = model.training
    model.eval()
    p = next(model.parameters(), None)
    x = torch.randn(batch_size, *input_size, device=p.device if p is not None else "cpu")
    kwargs = dict(input_names=["input"], output_names=["output"], external_data=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset, **kwargs)
    except Exception as e:  # noqa: BLE001 - fall back to the other exporter, re-raise its error if it fails too
        _logger.debug("TorchScript ONNX export failed (%s); trying dynamo", e)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, dynamo=True, opset_version=max(opset, 18), verbose=False,
                              **kwargs)
    finally:
        model.train(was_training)
    return path


def onnx_session(path: str | os.PathLike, *, threads: int | None = None, optimize: bool = True):
    """An onnxruntime CPU session with explicit thread count and graph optimisation level."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), sess_options=so, providers=["CPUExecutionProvider"])


def onnx_forward(path_or_session, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Run one input through an ONNX file (or an existing session) on onnxruntime's CPU provider."""
    sess = onnx_session(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) else path_or_session
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
