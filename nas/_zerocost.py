"""Zero-cost proxies: score an untrained network in one or two passes (higher = predicted better).

- ``naswot``: NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021,
  arXiv 2006.04647). For one batch of real images, every nonlinearity (ReLU, GELU, SiLU, Hardswish, ...)
  gives each image a binary code: the sign of its pre-activation at every unit. The score is
  ``log|K|`` with ``K[i, j]`` the number of units where images ``i`` and ``j`` agree. The network runs in
  training mode (batch statistics), as in the paper's code.
- ``synflow``: SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving
  synaptic flow", NeurIPS 2020, arXiv 2006.05467; used as a zero-cost NAS proxy by Abdelfattah et al., ICLR
  2021, arXiv 2101.08134): all parameters replaced by their absolute values, an all-ones input, float64, and
  the score ``sum |theta * dR/dtheta|`` over the weights of convolutions and linear layers with
  ``R = sum(output)``. As in the reference implementation (which builds the network without BatchNorm),
  every BatchNorm is made an identity (unit scale, zero shift, running mean 0 / variance 1, eval mode).
  The score is returned as ``log10`` of that sum: the raw value spans hundreds of orders of magnitude across
  architectures.
- ``params``: parameters of the deployed (re-parameterized) network. A plain size baseline, not a
  zero-cost proxy in the NAS sense; more is "better" only in that bigger networks tend to be more accurate.
- ``macs``: multiply-accumulates of one image through the deployed network at ``resolution``
  (``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2). The same kind of plain baseline.

All four build the network with ``num_classes=data.num_classes`` at the proxy resolution (the same rule as
:func:`train_proxy`: raised to the nearest multiple of 16 that fits its MobileViT stages), seeded by
``seed``, without touching the global RNG state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from search_space import Genome, as_genome, build_model, reparameterize

from ._data import ProxyData
from ._errors import NASError, SearchConfigError
from ._proxy import _check_number, _rgb, proxy_resolution, to_float

__all__ = ["ZERO_COST_METHODS", "zero_cost_score"]

_logger = logging.getLogger(__name__)

ZERO_COST_METHODS = ("naswot", "synflow", "params", "macs")
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)


def zero_cost_score(
        genome: Genome | Mapping[str, Any] | str,
        data: ProxyData,
        *,
        method: str = "naswot",
        resolution: int = 32,
        batch_size: int = 64,
        seed: int = 0,
) -> float:
    """Score ``genome`` without training it (see the module docstring for each ``method``).

    Args:
        genome: The architecture (a :class:`Genome`, its dict or JSON).
        data: Dataset providing the batch (``naswot``) and ``num_classes``.
        method: ``naswot``, ``synflow``, ``params`` or ``macs``.
        resolution: Input resolution (raised per genome where MobileViT stages need it).
        batch_size: Images in the NASWOT batch (the kernel is ``batch_size x batch_size``).
        seed: Seeds the initialisation and the choice of images.

    Returns:
        A finite float; higher means predicted better (``params``/``macs``: bigger).
    """
    genome = as_genome(genome)
    if method not in ZERO_COST_METHODS:
        raise SearchConfigError(f"`method` must be one of {', '.join(ZERO_COST_METHODS)}, got {method!r}")
    if not isinstance(data, ProxyData):
        raise TypeError(f"`data` must be a ProxyData (see nas.load_dataset), got {type(data).__name__}")
    _check_number("resolution", resolution, integer=True, lo=1)
    _check_number("batch_size", batch_size, integer=True, lo=2)
    _check_number("seed", seed, integer=True, lo=0)
    res = proxy_resolution(genome, resolution)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(genome, num_classes=data.num_classes)
    if method == "naswot":
        score = _naswot(model, _batch(data, res, batch_size, seed))
    elif method == "synflow":
        score = _synflow(model, res)
    elif method == "params":
        score = float(sum(p.numel() for p in reparameterize(model.eval()).parameters()))
    else:
        score = _macs(reparameterize(model.eval()), res)
    if not math.isfinite(score):
        raise NASError(f"genome {genome.key()}: {method} score is {score}")
    _logger.debug("%s(%s) = %.6g at %dpx", method, genome.key(), score, res)
    return score


def _batch(data: ProxyData, resolution: int, batch_size: int, seed: int) -> torch.Tensor:
    n = len(data.train_y)
    if n < 2:
        raise NASError(f"{data.name}: NASWOT needs at least 2 training images, got {n}")
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(batch_size, n), replace=False))
    return _rgb(to_float(data.train_x[torch.from_numpy(idx)], data, resolution))


@torch.no_grad()
def _naswot(model: nn.Module, x: torch.Tensor) -> float:
    n = x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        codes = (inputs[0].reshape(n, -1) > 0).double()
        kernel.add_(codes @ codes.T).add_((1.0 - codes) @ (1.0 - codes).T)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    if not handles:
        raise NASError("NASWOT: the network has no activation module to hook")
    try:
        model.train()
        model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    # identical codes for two images make K singular: the paper's score is then -inf; keep it finite
    return float(logdet) if float(sign) > 0 else float(torch.linalg.slogdet(kernel + torch.eye(n))[1])


def _synflow(model: nn.Module, resolution: int) -> float:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                if m.affine:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
        model.double().eval()
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    model.zero_grad(set_to_none=True)
    out = model(torch.ones((1, 3, resolution, resolution), dtype=torch.float64))
    out.sum().backward()
    total = 0.0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
                total += float((m.weight * m.weight.grad).abs().sum())
    if total <= 0.0:
        raise NASError("SynFlow: no signal reaches the output (all weight saliencies are zero)")
    return math.log10(total) if math.isfinite(total) else float("inf")


@torch.no_grad()
def _macs(model: nn.Module, resolution: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros((1, 3, resolution, resolution)))
    return counter.get_total_flops() / 2.0
