"""Helpers for equivalence tests of re-parameterizable modules (used by the test suite and scripts)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_", "rel_error", "unfoldable_batchnorms"]


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Randomise every BatchNorm/GroupNorm/LayerNorm statistic and affine, layer scale and affine mixer.

    Default BN state (gamma=1, beta=0, mean=0, var=1) and zero-initialised branches make a wrong fold
    look right (``docs/reparam.md``, pitfall P9); this gives every folded quantity a value of its own.
    """
    g = torch.Generator().manual_seed(seed)

    def u(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(t.shape, generator=g) * (hi - lo) + lo).to(t)

    def n(t: torch.Tensor, std: float) -> torch.Tensor:
        return (torch.randn(t.shape, generator=g) * std).to(t)

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_mean is not None:
                m.running_mean.copy_(n(m.running_mean, 0.2))
                m.running_var.copy_(u(m.running_var, 0.5, 2.0))
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                m.weight.copy_(u(m.weight, 0.5, 1.5))
                m.bias.copy_(n(m.bias, 0.2))
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("layer_scale", "affine_weight"):
            p.copy_(u(p, 0.5, 1.5))
        elif leaf == "affine_bias":
            p.copy_(n(p, 0.2))
    return model


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|a|``: the relative error used for whole-network logits."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def unfoldable_batchnorms(model: nn.Module) -> list[str]:
    """Names of BatchNorm modules left in ``model`` (after folding there should be none)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
