"""Re-parameterizable primitives and the folding algebra.

Every class here has a training form with parallel linear branches and BatchNorm, and an in-place,
idempotent ``reparameterize()`` that folds it into a single convolution (or linear layer). The
formulas are rules R1-R8 of ``docs/reparam.md`` (section 1; section 2 derives each class's fold):

* ``ConvBN``: conv -> BN -> act; BN folded into the conv (R1).
* ``MobileOneBlock``: k x k conv+BN branches, a 1x1 scale branch and a BN identity branch
  (MobileOne, FastViT stem/head/patch embedding; arXiv 2206.04040, 2303.14189).
* ``RepVggDw``: RepViT's depthwise token mixer ``BN(BN(dw_k(x)) + dw_1(x) + x)`` (arXiv 2307.09283).
* ``RepMixer``: FastViT's ``x + ls * (M(x) - BN(x))`` (arXiv 2303.14189).
* ``ReparamLargeKernelConv``: RepLKNet-style 7x7 + 3x3 (FastViT patch embedding).
* ``RepCPE``: conditional positional encoding ``x + dw_7(x)``.

Helper tensors (identity kernels) are always created on the weight's device and dtype, and new
convolutions are built with keyword arguments (``docs/reparam.md``, pitfall P7).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import SqueezeExcite
from torch import nn

__all__ = [
    "ConvBN",
    "MobileOneBlock",
    "RepCPE",
    "RepMixer",
    "RepVggDw",
    "ReparamLargeKernelConv",
    "bn_scale_shift",
    "conv_padding",
    "identity_kernel",
    "pad_kernel",
]


def conv_padding(kernel_size: int, stride: int = 1) -> int:
    """'Same'-style padding for odd kernels; no padding for non-overlapping even patches."""
    if kernel_size % 2 == 1:
        return (kernel_size - 1) // 2
    if kernel_size == stride:
        return 0
    raise ValueError(f"kernel_size {kernel_size} must be odd, or equal to the stride for a patchify conv")


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(a, t)`` with ``BN(z) = a * z + t`` in eval mode (running statistics)."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    a = gamma / std
    return a, beta - a * bn.running_mean


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a k x k kernel symmetrically to ``size`` x ``size`` (``docs/reparam.md`` R3: centred, odd sizes)."""
    k = kernel.shape[-1]
    if k == size:
        return kernel
    if (size - k) % 2:
        raise ValueError(f"cannot centre a {k}x{k} kernel inside {size}x{size}")
    p = (size - k) // 2
    return F.pad(kernel, [p, p, p, p])


def identity_kernel(channels: int, groups: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """The identity as a ``(C, C/g, size, size)`` kernel (``docs/reparam.md`` R4), on ``like``'s device and dtype."""
    in_per_group = channels // groups
    kernel = torch.zeros(channels, in_per_group, size, size, device=like.device, dtype=like.dtype)
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % in_per_group, size // 2, size // 2] = 1.0
    return kernel


def _new_conv(*, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int,
              groups: int, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(
        in_channels=in_chs, out_channels=out_chs, kernel_size=kernel_size, stride=stride, padding=padding,
        groups=groups, bias=True, device=weight.device, dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


class ConvBN(nn.Module):
    """Conv2d -> BatchNorm2d -> optional activation. ``reparameterize()`` folds the BN into the conv."""

    __jit_unused_properties__ = ["fused"]

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int = 1,
            stride: int = 1,
            groups: int = 1,
            act_layer: type[nn.Module] | None = None,
            bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels=in_chs, out_channels=out_chs, kernel_size=kernel_size, stride=stride,
            padding=conv_padding(kernel_size, stride), groups=groups, bias=False,
        )
        self.bn: nn.Module = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)
        self.act = act_layer() if act_layer is not None else nn.Identity()

    @property
    def fused(self) -> bool:
        return isinstance(self.bn, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def get_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent single conv's ``(weight, bias)``, whether or not already folded."""
        w = self.conv.weight
        b = self.conv.bias if self.conv.bias is not None else torch.zeros(w.shape[0], device=w.device, dtype=w.dtype)
        if self.fused:
            return w, b
        a, t = bn_scale_shift(self.bn)
        return w * a.reshape(-1, 1, 1, 1), a * b + t

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused:
            return
        w, b = self.get_kernel_bias()
        c = self.conv
        self.conv = _new_conv(
            in_chs=c.in_channels, out_chs=c.out_channels, kernel_size=c.kernel_size[0], stride=c.stride[0],
            padding=c.padding[0], groups=c.groups, weight=w, bias=b,
        )
        self.bn = nn.Identity()


def _branch_kernel_bias(
        branch: nn.Module, *, channels: int, groups: int, size: int, like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` of a ConvBN or BN-identity branch, centred in a ``size`` x ``size`` kernel."""
    if isinstance(branch, ConvBN):
        w, b = branch.get_kernel_bias()
        return pad_kernel(w, size), b
    if isinstance(branch, nn.modules.batchnorm._BatchNorm):
        a, t = bn_scale_shift(branch)
        return identity_kernel(channels, groups, size, like) * a.reshape(-1, 1, 1, 1), t
    raise TypeError(f"cannot fold branch of type {type(branch).__name__}")


class MobileOneBlock(nn.Module):
    """MobileOne block: parallel k x k conv+BN branches, a 1x1 scale branch and a BN identity branch.

    Deployed form: one ``reparam_conv`` (k x k, bias), then SE and activation.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int,
            stride: int = 1,
            groups: int = 1,
            num_conv_branches: int = 1,
            use_scale_branch: bool = True,
            use_se: bool = False,
            act_layer: type[nn.Module] | None = nn.GELU,
    ) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size = in_chs, out_chs, kernel_size
        self.stride, self.groups = stride, groups
        self.conv_kxk: nn.ModuleList | None = nn.ModuleList(
            ConvBN(in_chs, out_chs, kernel_size, stride=stride, groups=groups) for _ in range(num_conv_branches)
        )
        self.conv_scale: nn.Module | None = (
            ConvBN(in_chs, out_chs, 1, stride=stride, groups=groups)
            if use_scale_branch and kernel_size > 1 else None
        )
        self.identity: nn.Module | None = (
            nn.BatchNorm2d(out_chs) if in_chs == out_chs and stride == 1 else None
        )
        self.reparam_conv: nn.Conv2d | None = None
        self.se = SqueezeExcite(out_chs, rd_divisor=1) if use_se else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out: torch.Tensor | None = None  # typed for TorchScript (no int 0 + Tensor)
        if self.identity is not None:
            out = self.identity(x)
        if self.conv_scale is not None:
            y = self.conv_scale(x)
            out = y if out is None else out + y
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                y = branch(x)
                out = y if out is None else out + y
        assert out is not None
        return self.act(self.se(out))

    @torch.no_grad()
    def get_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reparam_conv is not None:
            return self.reparam_conv.weight, self.reparam_conv.bias
        like = self.conv_kxk[0].conv.weight
        branches: list[nn.Module] = list(self.conv_kxk)
        if self.conv_scale is not None:
            branches.append(self.conv_scale)
        if self.identity is not None:
            branches.append(self.identity)
        w = torch.zeros_like(pad_kernel(like, self.kernel_size))
        b = torch.zeros(self.out_chs, device=like.device, dtype=like.dtype)
        for branch in branches:
            bw, bb = _branch_kernel_bias(
                branch, channels=self.out_chs, groups=self.groups, size=self.kernel_size, like=like,
            )
            w, b = w + bw, b + bb
        return w, b

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        w, b = self.get_kernel_bias()
        self.reparam_conv = _new_conv(
            in_chs=self.in_chs, out_chs=self.out_chs, kernel_size=self.kernel_size, stride=self.stride,
            padding=conv_padding(self.kernel_size, self.stride), groups=self.groups, weight=w, bias=b,
        )
        self.conv_kxk = None
        self.conv_scale = None
        self.identity = None


class RepVggDw(nn.Module):
    """RepViT's RepVGG-style depthwise mixer: ``BN(BN(dw_k(x)) + dw_1(x) + x)``, folded to one dw k x k."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.conv: nn.Module | None = ConvBN(dim, dim, kernel_size, groups=dim)
        self.conv1: nn.Module | None = nn.Conv2d(dim, dim, kernel_size=1, groups=dim, bias=True)
        self.bn: nn.Module | None = nn.BatchNorm2d(dim)
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return self.bn(self.conv(x) + self.conv1(x) + x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        k = self.kernel_size
        w_k, b_k = self.conv.get_kernel_bias()
        w = w_k + pad_kernel(self.conv1.weight, k) + identity_kernel(self.dim, self.dim, k, w_k)
        b = b_k + self.conv1.bias
        a, t = bn_scale_shift(self.bn)
        self.reparam_conv = _new_conv(
            in_chs=self.dim, out_chs=self.dim, kernel_size=k, stride=1, padding=conv_padding(k),
            groups=self.dim, weight=w * a.reshape(-1, 1, 1, 1), bias=a * b + t,
        )
        self.conv = self.conv1 = self.bn = None


class RepMixer(nn.Module):
    """FastViT's RepMixer: ``x + ls * (M(x) - BN(x))`` with M a depthwise MobileOne block; folded to one dw conv."""

    def __init__(self, dim: int, kernel_size: int = 3, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.mixer: MobileOneBlock | None = MobileOneBlock(
            dim, dim, kernel_size, groups=dim, act_layer=None,
        )
        self.norm: nn.Module | None = nn.BatchNorm2d(dim)
        self.layer_scale: nn.Parameter | None = nn.Parameter(layer_scale_init * torch.ones(dim, 1, 1))
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        k = self.kernel_size
        w_m, b_m = self.mixer.get_kernel_bias()
        a_n, t_n = bn_scale_shift(self.norm)
        eye = identity_kernel(self.dim, self.dim, k, w_m)
        ls = self.layer_scale.reshape(-1)
        w = eye + ls.reshape(-1, 1, 1, 1) * (w_m - eye * a_n.reshape(-1, 1, 1, 1))
        b = ls * (b_m - t_n)
        self.reparam_conv = _new_conv(
            in_chs=self.dim, out_chs=self.dim, kernel_size=k, stride=1, padding=conv_padding(k),
            groups=self.dim, weight=w, bias=b,
        )
        self.mixer = None
        self.norm = None
        self.layer_scale = None


class ReparamLargeKernelConv(nn.Module):
    """Large k x k conv+BN in parallel with a small 3x3 conv+BN (RepLKNet / FastViT patch embedding)."""

    def __init__(
            self, in_chs: int, out_chs: int, kernel_size: int = 7, small_kernel: int = 3, stride: int = 2,
            groups: int | None = None,
    ) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size, self.stride = in_chs, out_chs, kernel_size, stride
        self.groups = groups if groups is not None else math.gcd(in_chs, out_chs)
        self.large_conv: ConvBN | None = ConvBN(in_chs, out_chs, kernel_size, stride=stride, groups=self.groups)
        self.small_conv: ConvBN | None = ConvBN(in_chs, out_chs, small_kernel, stride=stride, groups=self.groups)
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return self.large_conv(x) + self.small_conv(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        w_l, b_l = self.large_conv.get_kernel_bias()
        w_s, b_s = self.small_conv.get_kernel_bias()
        self.reparam_conv = _new_conv(
            in_chs=self.in_chs, out_chs=self.out_chs, kernel_size=self.kernel_size, stride=self.stride,
            padding=conv_padding(self.kernel_size, self.stride), groups=self.groups,
            weight=w_l + pad_kernel(w_s, self.kernel_size), bias=b_l + b_s,
        )
        self.large_conv = self.small_conv = None


class RepCPE(nn.Module):
    """Conditional positional encoding ``x + dw_k(x)`` (FastViT), folded to one dw conv."""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.pe: nn.Conv2d | None = nn.Conv2d(
            dim, dim, kernel_size=kernel_size, padding=conv_padding(kernel_size), groups=dim, bias=True,
        )
        self.reparam_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.pe(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        k = self.kernel_size
        w = self.pe.weight + identity_kernel(self.dim, self.dim, k, self.pe.weight)
        self.reparam_conv = _new_conv(
            in_chs=self.dim, out_chs=self.dim, kernel_size=k, stride=1, padding=conv_padding(k),
            groups=self.dim, weight=w, bias=self.pe.bias,
        )
        self.pe = None
