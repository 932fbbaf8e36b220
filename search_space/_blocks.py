"""Blocks of the unified space: token mixers, FFN, stages, downsampling layers, stems and heads.

Block layout (every mixer but ``mobilevit``)::

    x = mixer(x)                 # each mixer carries its own residual
    x = se(x)                    # optional squeeze-excite (RepViT placement: between the two mixers)
    x = x + drop_path(ffn(x))    # channel mixer: [dw k x k + BN] -> 1x1+BN -> GELU -> 1x1+BN

The FFN's last BN starts at zero (RepViT's ``bn_weight_init=0``), so it plays the part of a layer
scale and folds away with the rest of the BN.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, GroupNorm1, SqueezeExcite, create_classifier, make_divisible
from timm.models import register_notrace_function
from torch import nn

from ._genome import CONV_MIXERS, StageGenome
from ._layers import (
    ConvBN,
    MobileOneBlock,
    ReparamLargeKernelConv,
    RepCPE,
    RepMixer,
    RepVggDw,
    bn_scale_shift,
)

__all__ = [
    "AttentionMixer",
    "ConvFFN",
    "HeadUnit",
    "IdentityMixer",
    "MobileViTBlock",
    "POOL_TYPES",
    "RepNASBlock",
    "RepNASHead",
    "RepNASStage",
    "block_signature",
    "block_uses_se",
    "cpe_signature",
    "create_downsample",
    "create_head",
    "create_stem",
    "create_unit",
    "downsample_signature",
    "head_signature",
    "mobilevit_signature",
    "se_signature",
    "stage_layout",
    "stem_signature",
    "stem_input_convs",
    "training_stem_input_convs",
]


class ConvFFN(nn.Module):
    """Channel mixer: optional depthwise k x k + BN, then 1x1 expand + GELU + 1x1 project (all BN-folded)."""

    def __init__(self, dim: int, ratio: int, kernel_size: int = 0, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.dw = ConvBN(dim, dim, kernel_size, groups=dim) if kernel_size else nn.Identity()
        self.fc1 = ConvBN(dim, hidden, 1, act_layer=act_layer)
        self.fc2 = ConvBN(hidden, dim, 1, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.dw(x)))


class IdentityMixer(nn.Module):
    """RIFormer's identity token mixer (arXiv 2304.05659).

    Training form: ``x + ls * (Aff(N(x)) - N(x))`` with ``Aff(y) = s * y + t`` per channel and ``N`` a
    one-group GroupNorm. ``reparameterize()`` folds ``(s - 1)``, ``t`` and ``ls`` into the norm's affine
    (``docs/reparam.md``, R8 and section 2.7), leaving ``x + N'(x)``: the mixer itself is gone.
    """

    __jit_unused_properties__ = ["fused"]

    def __init__(self, dim: int, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.norm = GroupNorm1(dim)
        self.affine_weight: nn.Parameter | None = nn.Parameter(torch.ones(dim))
        self.affine_bias: nn.Parameter | None = nn.Parameter(torch.zeros(dim))
        self.layer_scale: nn.Parameter | None = nn.Parameter(layer_scale_init * torch.ones(dim))

    @property
    def fused(self) -> bool:
        return self.affine_weight is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        # attribute checks TorchScript can refine (a property cannot)
        if self.affine_weight is None or self.affine_bias is None or self.layer_scale is None:
            return x + y
        s = (self.affine_weight - 1).reshape(1, -1, 1, 1)
        t = self.affine_bias.reshape(1, -1, 1, 1)
        return x + self.layer_scale.reshape(1, -1, 1, 1) * (s * y + t)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused:
            return
        s, t, ls = self.affine_weight - 1, self.affine_bias, self.layer_scale
        self.norm.weight.copy_(ls * s * self.norm.weight)
        self.norm.bias.copy_(ls * (s * self.norm.bias + t))
        self.affine_weight = None
        self.affine_bias = None
        self.layer_scale = None


def _head_dim(dim: int) -> int:
    for hd in (32, 16, 8):
        if dim % hd == 0:
            return hd
    raise ValueError(f"attention width {dim} must be a multiple of 8")


class AttentionMixer(nn.Module):
    """Pre-norm multi-head self-attention over all tokens of the map (FastViT's attention stage).

    ``x + ls * proj(MHSA(qkv(BN(x))))``. ``reparameterize()`` folds the BN into ``qkv`` (exact: a linear
    layer has no padding, ``docs/reparam.md`` R7) and the layer scale into ``proj`` (R6).
    """

    def __init__(self, dim: int, head_dim: int | None = None, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.head_dim = head_dim or _head_dim(dim)
        self.num_heads = dim // self.head_dim
        self.norm: nn.Module = nn.BatchNorm2d(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.layer_scale: nn.Parameter | None = nn.Parameter(layer_scale_init * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).reshape(b, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        t = F.scaled_dot_product_attention(q, k, v)
        t = self.proj(t.transpose(1, 2).reshape(b, h * w, c))
        if self.layer_scale is not None:
            t = t * self.layer_scale
        return x + t.transpose(1, 2).reshape(b, c, h, w)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.layer_scale is None:
            return
        a, t = bn_scale_shift(self.norm)
        w = self.qkv.weight
        qkv = nn.Linear(w.shape[1], w.shape[0], bias=True, device=w.device, dtype=w.dtype)
        qkv.weight.copy_(w * a.reshape(1, -1))
        qkv.bias.copy_(w @ t + (self.qkv.bias if self.qkv.bias is not None else 0))
        self.qkv = qkv
        self.proj.weight.mul_(self.layer_scale.reshape(-1, 1))
        self.proj.bias.mul_(self.layer_scale)
        self.norm = nn.Identity()
        self.layer_scale = None


def create_mixer(st: StageGenome, dim: int) -> nn.Module:
    if st.mixer == "repdw":
        return RepVggDw(dim, st.kernel_size)
    if st.mixer == "repmixer":
        return RepMixer(dim, st.kernel_size)
    if st.mixer == "identity":
        return IdentityMixer(dim)
    if st.mixer == "attention":
        return AttentionMixer(dim)
    raise ValueError(f"mixer {st.mixer!r} is not a per-block mixer")


class RepNASBlock(nn.Module):
    """``mixer -> SE -> x + FFN(x)``: RepViT / FastViT / RIFormer / attention blocks."""

    def __init__(
            self, dim: int, *, mixer: nn.Module, ffn_ratio: int, ffn_kernel_size: int, use_se: bool,
            drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.token_mixer = mixer
        self.se = SqueezeExcite(dim, 0.25) if use_se else nn.Identity()
        self.ffn = ConvFFN(dim, ffn_ratio, ffn_kernel_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.drop_path(self.ffn(x))


class _TransformerLayer(nn.Module):
    """Pre-LN transformer layer on ``(B, N, d)`` tokens (MobileViT: qkv bias, SiLU MLP)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


def _resize_to_multiple(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``x`` bilinearly resized up to the nearest multiple of ``patch_size`` (unchanged when it divides)."""
    h, w = x.shape[-2], x.shape[-1]
    new_h, new_w = (h + patch_size - 1) // patch_size * patch_size, (w + patch_size - 1) // patch_size * patch_size
    if new_h != h or new_w != w:
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    return x


def _resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` bilinearly resized back to ``ref``'s map size (unchanged when it already has it)."""
    h, w = ref.shape[-2], ref.shape[-1]
    if x.shape[-2] != h or x.shape[-1] != w:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x


# Data-dependent branches: torch.fx (torchvision's feature extraction, timm's FeatureGraphNet) calls these as
# leaves instead of tracing into them, so a traced model still resizes only where the map needs it.
torch.fx.wrap("_resize_to_multiple")
torch.fx.wrap("_resize_like")
register_notrace_function(_resize_to_multiple)
register_notrace_function(_resize_like)


class MobileViTBlock(nn.Module):
    """MobileViT v1 block (arXiv 2110.02178): local conv, unfold, transformer, fold, fuse.

    As in timm's ``MobileVitBlock``, a feature map that does not divide by the patch size is resized
    (bilinear) up to the nearest multiple before unfolding and back after folding. ``Genome`` never lets
    that happen at the deployment resolution, so the deployed (and priced) network has no resize; it only
    occurs at other input sizes (a backbone fed odd sizes, ``features_only`` at 96 px, ...).
    """

    def __init__(
            self, dim: int, *, depth: int, kernel_size: int = 3, patch_size: int = 2, mlp_ratio: int = 2,
            transformer_ratio: float = 1.5, num_heads: int = 4,
    ) -> None:
        super().__init__()
        d = make_divisible(dim * transformer_ratio, 8)
        self.patch_size = patch_size
        self.conv_kxk = ConvBN(dim, dim, kernel_size, act_layer=nn.SiLU)
        self.conv_1x1 = nn.Conv2d(dim, d, kernel_size=1, bias=False)
        self.transformer = nn.Sequential(*[_TransformerLayer(d, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.conv_proj = ConvBN(d, dim, 1, act_layer=nn.SiLU)
        self.conv_fusion = ConvBN(2 * dim, dim, kernel_size, act_layer=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y = self.conv_1x1(self.conv_kxk(x))
        p = self.patch_size
        y = _resize_to_multiple(y, p)
        b, d, h, w = y.shape
        nh, nw = h // p, w // p
        # unfold: (B, d, nh, p, nw, p) -> (B * p * p, nh * nw, d): one sequence per intra-patch position
        y = y.reshape(b, d, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, nh * nw, d)
        y = self.norm(self.transformer(y))
        y = y.reshape(b, p, p, nh, nw, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        y = self.conv_proj(_resize_like(y, shortcut))
        return self.conv_fusion(torch.cat((shortcut, y), dim=1))


# -- downsampling layers ------------------------------------------------------------------------


class RepViTDownsample(nn.Module):
    """RepViT's deeper downsampling: a stride-1 block, dw 3x3 s2, 1x1 expansion, residual FFN."""

    def __init__(self, in_chs: int, out_chs: int, *, ffn_ratio: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.pre_block = RepNASBlock(
            in_chs, mixer=RepVggDw(in_chs, kernel_size), ffn_ratio=ffn_ratio, ffn_kernel_size=0, use_se=False,
        )
        self.spatial = ConvBN(in_chs, in_chs, 3, stride=2, groups=in_chs)
        self.channel = ConvBN(in_chs, out_chs, 1)
        self.ffn = ConvFFN(out_chs, ffn_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel(self.spatial(self.pre_block(x)))
        return x + self.ffn(x)


class RepLKDownsample(nn.Module):
    """FastViT's patch embedding: re-parameterizable 7x7 (+3x3) grouped conv s2, then a 1x1 MobileOne block."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.lk = ReparamLargeKernelConv(in_chs, out_chs, kernel_size=7, small_kernel=3, stride=2)
        self.pw = MobileOneBlock(out_chs, out_chs, 1, act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.lk(x))


class ConvNeXtDownsample(nn.Module):
    """ConvNeXt's separate downsampling layer: norm then 2x2 stride-2 conv.

    BN stands in for ConvNeXt's LayerNorm so that it folds into the conv: BN before a conv is exact to
    fold only without padding (``docs/reparam.md``, R7), which a non-overlapping 2x2 conv has.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.norm: nn.Module = nn.BatchNorm2d(in_chs)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=2, stride=2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self.norm, nn.Identity):
            return
        a, t = bn_scale_shift(self.norm)
        w = self.conv.weight
        self.conv.bias.add_((w * t.reshape(1, -1, 1, 1)).sum(dim=(1, 2, 3)))
        w.mul_(a.reshape(1, -1, 1, 1))
        self.norm = nn.Identity()


def create_downsample(kind: str, in_chs: int, out_chs: int, st: StageGenome) -> nn.Module:
    if kind == "none":
        if in_chs != out_chs:
            raise ValueError(f"stage without downsampling cannot change width {in_chs} -> {out_chs}")
        return nn.Identity()
    if kind == "repvit":
        return RepViTDownsample(in_chs, out_chs, ffn_ratio=st.ffn_ratio)
    if kind == "replk":
        return RepLKDownsample(in_chs, out_chs)
    if kind == "convnext":
        return ConvNeXtDownsample(in_chs, out_chs)
    if kind == "metaformer":
        # MetaFormer / PoolFormer / RIFormer: overlapping 3x3 stride-2 conv (+BN, folded)
        return ConvBN(in_chs, out_chs, 3, stride=2)
    raise ValueError(f"unknown downsample {kind!r}")


# -- a stage's layout: the one place that decides which units a stage is made of ----------------
#
# A unit is described by its *signature*: a small JSON-able dict naming its type and every argument that changes
# its cost, including its input shape (``in``: C, H, W) and stride. :func:`stage_layout` lists a stage's units,
# :func:`create_unit` builds the module a signature describes; ``RepNASStage`` is assembled from exactly these, and
# ``search_space.units_of`` / ``search_space.build_unit`` (which ``latency_lut`` prices) use the same two functions.


def stem_signature(kind: str, resolution: int, out_chs: int, in_chans: int = 3) -> dict[str, Any]:
    return {"type": "stem", "kind": kind, "in": [in_chans, resolution, resolution], "out": out_chs, "stride": 4}


def downsample_signature(kind: str, in_chs: int, out_chs: int, hw_in: int, ffn_ratio: int) -> dict[str, Any]:
    sig: dict[str, Any] = {"type": "downsample", "kind": kind, "in": [in_chs, hw_in, hw_in], "out": out_chs,
                           "stride": 2}
    if kind == "repvit":
        sig["ffn_ratio"] = ffn_ratio
    return sig


def cpe_signature(dim: int, hw: int) -> dict[str, Any]:
    return {"type": "cpe", "in": [dim, hw, hw], "stride": 1}


def block_signature(st: StageGenome, dim: int, hw: int, use_se: bool) -> dict[str, Any]:
    sig: dict[str, Any] = {"type": "block", "mixer": st.mixer, "ffn_ratio": st.ffn_ratio,
                           "ffn_kernel": st.ffn_kernel_size, "se": use_se, "in": [dim, hw, hw], "stride": 1}
    if st.mixer in CONV_MIXERS:
        sig["kernel"] = st.kernel_size
    return sig


def mobilevit_signature(depth: int, kernel_size: int, patch_size: int, ffn_ratio: int, dim: int,
                        hw: int) -> dict[str, Any]:
    return {"type": "mobilevit", "depth": depth, "kernel": kernel_size, "patch": patch_size, "ffn_ratio": ffn_ratio,
            "in": [dim, hw, hw], "stride": 1}


def se_signature(dim: int, hw: int) -> dict[str, Any]:
    return {"type": "se", "in": [dim, hw, hw], "stride": 1}


def head_signature(kind: str, in_chs: int, hw: int, num_classes: int) -> dict[str, Any]:
    return {"type": "head", "kind": kind, "in": [in_chs, hw, hw], "num_classes": num_classes}


def block_uses_se(st: StageGenome, index: int) -> bool:
    """Whether block ``index`` of a per-block-mixer stage has squeeze-excite (``alternate``: the even ones)."""
    return st.se == "all" or (st.se == "alternate" and index % 2 == 0)


def stage_layout(in_chs: int, st: StageGenome, hw: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """The units of a stage, in order, as ``(slot, signature)``: ``slot`` is the ``RepNASStage`` attribute the
    unit lives in (``downsample``, ``pos_emb`` or ``blocks``), ``hw`` the stage's output map size (the modules do
    not depend on it; only the signatures carry it). A ``none`` downsampling has no unit.

    Layout: downsampling (when the stage has one), a conditional positional encoding before attention blocks,
    then ``depth`` blocks with SE on all / the even ones, or for ``mobilevit`` a single MobileViT block of
    ``depth`` transformer layers followed by one SE when the stage has any.
    """
    dim = st.width
    units: list[tuple[str, dict[str, Any]]] = []
    if st.downsample != "none":
        units.append(("downsample", downsample_signature(st.downsample, in_chs, dim, hw * 2, st.ffn_ratio)))
    if st.mixer == "attention":
        units.append(("pos_emb", cpe_signature(dim, hw)))
    if st.mixer == "mobilevit":
        units.append(("blocks", mobilevit_signature(st.depth, st.kernel_size, st.patch_size, st.ffn_ratio, dim, hw)))
        if st.se != "none":
            units.append(("blocks", se_signature(dim, hw)))
    else:
        units += [("blocks", block_signature(st, dim, hw, block_uses_se(st, i))) for i in range(st.depth)]
    return units


def create_unit(signature: dict[str, Any], *, drop_path: float = 0.0) -> nn.Module:
    """The training-form module ``signature`` describes (``drop_path``: stochastic depth of a ``block``).

    Reads only channels and the arguments in the signature, never the map size. ``head`` is the deployable head
    unit (``final_conv`` -> average pool -> linear classifier), not ``RepNASHead``'s timm interface.
    """
    s = signature
    c_in = s["in"][0]
    t = s["type"]
    if t == "stem":
        return create_stem(s["kind"], c_in, s["out"])
    if t == "downsample":
        return create_downsample(s["kind"], c_in, s["out"],
                                 StageGenome(depth=1, width=s["out"], ffn_ratio=s.get("ffn_ratio", 2)))
    if t == "cpe":
        return RepCPE(c_in, 7)
    if t == "block":
        st = StageGenome(depth=1, width=c_in, mixer=s["mixer"], kernel_size=s.get("kernel", 3))
        return RepNASBlock(c_in, mixer=create_mixer(st, c_in), ffn_ratio=s["ffn_ratio"],
                           ffn_kernel_size=s["ffn_kernel"], use_se=s["se"], drop_path=drop_path)
    if t == "mobilevit":
        return MobileViTBlock(c_in, depth=s["depth"], kernel_size=s["kernel"], patch_size=s["patch"],
                              mlp_ratio=s["ffn_ratio"])
    if t == "se":
        return SqueezeExcite(c_in, 0.25)
    if t == "head":
        return HeadUnit(s["kind"], c_in, s["num_classes"])
    raise ValueError(f"unknown block type {t!r} in signature {signature}")


class RepNASStage(nn.Module):
    """Downsample, optional conditional positional encoding (attention stages), then the blocks.

    Built from :func:`stage_layout` through :func:`create_unit`: the stage is exactly the units it is priced by.
    """

    def __init__(self, in_chs: int, st: StageGenome, drop_path_rates: list[float]) -> None:
        super().__init__()
        layout = stage_layout(in_chs, st)
        slots = {slot: [sig for name, sig in layout if name == slot] for slot in ("downsample", "pos_emb", "blocks")}
        # a "none" downsampling has no unit: create_downsample checks the width does not change
        self.downsample = (create_unit(slots["downsample"][0]) if slots["downsample"]
                           else create_downsample(st.downsample, in_chs, st.width, st))
        self.pos_emb = create_unit(slots["pos_emb"][0]) if slots["pos_emb"] else nn.Identity()
        self.blocks = nn.Sequential(*[
            create_unit(sig, drop_path=drop_path_rates[i] if sig["type"] == "block" else 0.0)
            for i, sig in enumerate(slots["blocks"])
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pos_emb(self.downsample(x)))


# -- stems and heads ------------------------------------------------------------------------------


def create_stem(kind: str, in_chans: int, out_chs: int) -> nn.Module:
    """Stride-4 stem: RepViT (two 3x3 s2 conv+BN), FastViT MobileOne, or ConvNeXt patchify (4x4 s4)."""
    if kind == "repvit":
        return nn.Sequential(
            ConvBN(in_chans, out_chs // 2, 3, stride=2, act_layer=nn.GELU),
            ConvBN(out_chs // 2, out_chs, 3, stride=2),
        )
    if kind == "mobileone":
        return nn.Sequential(
            MobileOneBlock(in_chans, out_chs, 3, stride=2),
            MobileOneBlock(out_chs, out_chs, 3, stride=2, groups=out_chs),
            MobileOneBlock(out_chs, out_chs, 1),
        )
    if kind == "patchify":
        return ConvBN(in_chans, out_chs, 4, stride=4)
    raise ValueError(f"unknown stem {kind!r}")


def stem_input_convs(stem: nn.Module) -> tuple[str, ...]:
    """Names, relative to ``stem``, of the convolutions that read the input image (timm's ``first_conv``), in the
    stem's current form: folding changes them for the ``mobileone`` stem (to ``0.reparam_conv``)."""
    first, prefix = (stem[0], "0.") if isinstance(stem, nn.Sequential) else (stem, "")
    return tuple(prefix + n for n, m in first.named_modules() if isinstance(m, nn.Conv2d))


@functools.cache
def training_stem_input_convs(kind: str) -> tuple[str, ...]:
    """:func:`stem_input_convs` of a training-form stem of ``kind`` (the names do not depend on its widths).

    The probe stem is built on the meta device, leaving torch's random state as it was."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return stem_input_convs(create_stem(kind, 3, 16))


def create_head(kind: str, in_chs: int) -> tuple[nn.Module, int]:
    """Feature layer before pooling (``final_conv``) and the pooled feature width it produces."""
    if kind == "linear":
        return nn.Identity(), in_chs
    if kind == "mobileone":
        return MobileOneBlock(in_chs, 2 * in_chs, 3, groups=in_chs, use_se=True), 2 * in_chs
    if kind == "conv":
        return ConvBN(in_chs, 4 * in_chs, 1, act_layer=nn.SiLU), 4 * in_chs
    raise ValueError(f"unknown head {kind!r}")


class HeadUnit(nn.Module):
    """The priced head unit: ``final_conv`` -> global average pool -> linear classifier (deployed, the ``linear``
    head's BN is folded into the classifier, so the same layers as a deployed ``RepNASNet``'s ``final_conv`` and
    ``head``)."""

    def __init__(self, kind: str, in_chs: int, num_classes: int) -> None:
        super().__init__()
        self.final_conv, feats = create_head(kind, in_chs)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feats, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.final_conv(x)).flatten(1))


#: ``global_pool`` values (timm's ``SelectAdaptivePool2d`` names; ``''`` keeps the unpooled map).
POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "fast", "fastavg", "fastmax", "fastavgmax", "fastcatavgmax", "")


class RepNASHead(nn.Module):
    """Classifier head: global pool -> [BN] -> dropout -> fc (timm's ``ClassifierHead`` with RepViT's BN_Linear).

    The ``linear`` head's BN (``use_norm``) belongs to the classifier, as in RepViT: it is created and removed
    with the classifier (none when ``num_classes == 0``) and folds into ``fc``, so ``pre_logits`` (the pooled
    features) are the same before and after :func:`search_space.reparameterize`.

    ``pool_type=''`` keeps the unpooled map: with ``num_classes == 0`` the head passes the 4-D map through, with
    classes ``fc`` is a 1x1 conv (per-position logits), as in timm's ``NormMlpClassifierHead``.
    """

    __jit_unused_properties__ = ["pool_type"]

    def __init__(
            self, in_features: int, num_classes: int, *, pool_type: str = "avg", use_norm: bool = False,
            drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.use_norm = use_norm
        self.drop = nn.Dropout(drop_rate)
        self.reset(num_classes, pool_type)  # creates global_pool, norm, fc and num_features

    @property
    def pool_type(self) -> str:
        return self.global_pool.pool_type

    def reset(self, num_classes: int, pool_type: str | None = None, *, device: torch.device | None = None,
              dtype: torch.dtype | None = None) -> None:
        """A new classifier (BN included) for ``num_classes`` (0: none) and, unless None, new pooling.

        The new layers are created on ``device`` / with ``dtype``; where not given, those of the head's own
        parameters, which a head without a classifier does not have (``RepNASNet.reset_classifier`` passes the
        model's).
        """
        ref = next(self.parameters(), None)
        if ref is not None:
            device = ref.device if device is None else device
            dtype = ref.dtype if dtype is None else dtype
        dd = {"device": device, "dtype": dtype}
        pool_type = self.pool_type if pool_type is None else pool_type
        unpooled = not pool_type
        # timm's create_classifier: flatten + Linear after pooling, 1x1 conv on the unpooled map
        self.global_pool, self.fc = create_classifier(self.in_features, num_classes, pool_type, use_conv=unpooled,
                                                      **dd)
        self.num_features = self.in_features * self.global_pool.feat_mult()
        if self.use_norm and num_classes > 0:
            self.norm = (nn.BatchNorm2d if unpooled else nn.BatchNorm1d)(self.num_features, **dd)
        else:
            self.norm = nn.Identity()
        for m in (self.global_pool, self.norm, self.fc):
            m.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if pre_logits:
            return x
        return self.fc(self.drop(self.norm(x)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if not isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            return
        a, t = bn_scale_shift(self.norm)
        w = self.fc.weight  # Linear (C_out, C) or 1x1 conv (C_out, C, 1, 1)
        w2 = w.reshape(w.shape[0], -1)
        self.fc.bias.add_(w2 @ t)
        w.mul_(a.reshape((1, -1) + (1,) * (w.dim() - 2)))
        self.norm = nn.Identity()
