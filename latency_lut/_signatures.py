"""Block signatures: the units a network is priced by.

A signature is a small JSON object naming a block type and every argument that changes its cost,
including its input shape (``in``: C, H, W) and stride. The same signature always builds the same
deployed (re-parameterized) module, so a LUT entry measured once prices every occurrence. A
network's latency is the sum of its units' entries (stem, downsampling layers, positional encodings,
blocks, head).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import SqueezeExcite
from torch import nn

from search_space import Genome, SearchSpace, StageGenome, reparameterize
from search_space._blocks import (
    MobileViTBlock,
    RepNASBlock,
    create_downsample,
    create_head,
    create_mixer,
    create_stem,
)
from search_space._genome import CONV_MIXERS, STAGE_STRIDES
from search_space._layers import RepCPE

__all__ = ["Unit", "build_unit", "enumerate_space", "signature_key", "units_of_genome"]

BLOCK_TYPES = ("stem", "downsample", "cpe", "block", "mobilevit", "se", "head")


def signature_key(signature: dict[str, Any]) -> str:
    text = json.dumps(signature, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Unit:
    """One priced unit of a network: its signature and how often it occurs."""

    signature: dict[str, Any]
    count: int = 1

    @property
    def key(self) -> str:
        return signature_key(self.signature)

    @property
    def block_type(self) -> str:
        return self.signature["type"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.signature["in"])  # type: ignore[return-value]


class _HeadUnit(nn.Module):
    def __init__(self, kind: str, in_chs: int, num_classes: int) -> None:
        super().__init__()
        self.final_conv, feats = create_head(kind, in_chs)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feats, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.final_conv(x)).flatten(1))


def build_unit(signature: dict[str, Any]) -> nn.Module:
    """The deployed module a signature describes (random weights; eval mode)."""
    s = signature
    c_in = s["in"][0]
    t = s["type"]
    if t == "stem":
        m = create_stem(s["kind"], c_in, s["out"])
    elif t == "downsample":
        m = create_downsample(s["kind"], c_in, s["out"],
                              StageGenome(depth=1, width=s["out"], ffn_ratio=s.get("ffn_ratio", 2)))
    elif t == "cpe":
        m = RepCPE(c_in, 7)
    elif t == "block":
        st = StageGenome(depth=1, width=c_in, mixer=s["mixer"], kernel_size=s.get("kernel", 3))
        m = RepNASBlock(c_in, mixer=create_mixer(st, c_in), ffn_ratio=s["ffn_ratio"],
                        ffn_kernel_size=s["ffn_kernel"], use_se=s["se"])
    elif t == "mobilevit":
        m = MobileViTBlock(c_in, depth=s["depth"], kernel_size=s["kernel"], patch_size=s["patch"],
                           mlp_ratio=s["ffn_ratio"])
    elif t == "se":
        m = SqueezeExcite(c_in, 0.25)
    elif t == "head":
        m = _HeadUnit(s["kind"], c_in, s["num_classes"])
    else:
        raise ValueError(f"unknown block type {t!r} in signature {signature}")
    return reparameterize(m.eval())


def _block_sig(st: StageGenome, c: int, hw: int, use_se: bool) -> dict[str, Any]:
    sig: dict[str, Any] = {"type": "block", "mixer": st.mixer, "ffn_ratio": st.ffn_ratio,
                           "ffn_kernel": st.ffn_kernel_size, "se": use_se, "in": [c, hw, hw], "stride": 1}
    if st.mixer in CONV_MIXERS:
        sig["kernel"] = st.kernel_size
    return sig


def _down_sig(kind: str, c_in: int, c_out: int, hw: int, ffn_ratio: int) -> dict[str, Any]:
    sig: dict[str, Any] = {"type": "downsample", "kind": kind, "in": [c_in, hw, hw], "out": c_out, "stride": 2}
    if kind == "repvit":
        sig["ffn_ratio"] = ffn_ratio
    return sig


def units_of_genome(genome: Genome, resolution: int | None = None, num_classes: int = 1000) -> list[Unit]:
    """The units of ``genome``'s network at ``resolution`` (default: the genome's), with multiplicity."""
    if resolution is not None and resolution != genome.resolution:
        genome = genome.with_resolution(resolution)
    res = genome.resolution
    sigs: list[dict[str, Any]] = [
        {"type": "stem", "kind": genome.stem, "in": [3, res, res], "out": genome.stages[0].width, "stride": 4},
    ]
    c_prev = genome.stages[0].width
    for i, st in enumerate(genome.stages):
        hw = res // STAGE_STRIDES[i]
        if st.downsample != "none":
            sigs.append(_down_sig(st.downsample, c_prev, st.width, hw * 2, st.ffn_ratio))
        if st.mixer == "attention":
            sigs.append({"type": "cpe", "in": [st.width, hw, hw], "stride": 1})
        if st.mixer == "mobilevit":
            sigs.append({"type": "mobilevit", "depth": st.depth, "kernel": st.kernel_size, "patch": st.patch_size,
                         "ffn_ratio": st.ffn_ratio, "in": [st.width, hw, hw], "stride": 1})
            if st.se != "none":
                sigs.append({"type": "se", "in": [st.width, hw, hw], "stride": 1})
        else:
            for j in range(st.depth):
                use_se = st.se == "all" or (st.se == "alternate" and j % 2 == 0)
                sigs.append(_block_sig(st, st.width, hw, use_se))
        c_prev = st.width
    hw = res // STAGE_STRIDES[-1]
    sigs.append({"type": "head", "kind": genome.head, "in": [c_prev, hw, hw], "num_classes": num_classes})
    counts = Counter(json.dumps(s, sort_keys=True) for s in sigs)
    return [Unit(json.loads(text), n) for text, n in counts.items()]


def enumerate_space(space: SearchSpace, num_classes: int = 1000) -> Iterator[dict[str, Any]]:
    """Every signature a genome of ``space`` can contain (at the space's resolution), each once."""
    seen: set[str] = set()

    def emit(sig: dict[str, Any]) -> Iterable[dict[str, Any]]:
        k = signature_key(sig)
        if k not in seen:
            seen.add(k)
            yield sig

    res = space.resolution
    se_flags = sorted({m != "none" for m in space.se_modes} | ({False} if "alternate" in space.se_modes else set()))
    for stem, w in itertools.product(space.stems, space.stages[0].widths):
        yield from emit({"type": "stem", "kind": stem, "in": [3, res, res], "out": w, "stride": 4})
    prev_widths = space.stages[0].widths
    for i, ch in enumerate(space.stages):
        hw = res // STAGE_STRIDES[i]
        if i:
            for kind, c_in, c_out in itertools.product(space.downsamples, prev_widths, ch.widths):
                for r in (space.ffn_ratios if kind == "repvit" else space.ffn_ratios[:1]):
                    yield from emit(_down_sig(kind, c_in, c_out, hw * 2, r))
        for w, mixer in itertools.product(ch.widths, ch.mixers):
            kernels = space.kernel_sizes if mixer in CONV_MIXERS else (3,)
            if mixer == "attention":
                yield from emit({"type": "cpe", "in": [w, hw, hw], "stride": 1})
            if mixer == "mobilevit":
                patches = [p for p in space.patch_sizes if hw % p == 0]
                for k, r, d, p in itertools.product(kernels, space.ffn_ratios, range(ch.depth[0], ch.depth[1] + 1),
                                                    patches):
                    yield from emit({"type": "mobilevit", "depth": d, "kernel": k, "patch": p, "ffn_ratio": r,
                                     "in": [w, hw, hw], "stride": 1})
                if any(m != "none" for m in space.se_modes):
                    yield from emit({"type": "se", "in": [w, hw, hw], "stride": 1})
                continue
            for k, r, fk, se in itertools.product(kernels, space.ffn_ratios, space.ffn_kernel_sizes, se_flags):
                st = StageGenome(depth=1, width=w, mixer=mixer, kernel_size=k, ffn_ratio=r, ffn_kernel_size=fk)
                yield from emit(_block_sig(st, w, hw, se))
        prev_widths = ch.widths
    hw = res // STAGE_STRIDES[-1]
    for kind, w in itertools.product(space.heads, space.stages[-1].widths):
        yield from emit({"type": "head", "kind": kind, "in": [w, hw, hw], "num_classes": num_classes})


