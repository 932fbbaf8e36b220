"""A network's deployable units: the decomposition ``latency_lut`` prices, owned by the code that builds the network.

:func:`unit_signatures` lists a genome's units in network order (stem, then per stage what
:func:`~search_space._blocks.stage_layout` gives, then the head); ``RepNASStage`` is built from the same layout
through the same :func:`~search_space._blocks.create_unit`, so the units priced are the network built.
:func:`build_unit` gives the deployed (re-parameterized) module of a signature. The stage-independent map sizes
come from :data:`~search_space._genome.STAGE_STRIDES`.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from torch import nn

from ._blocks import (
    block_signature,
    cpe_signature,
    create_unit,
    downsample_signature,
    head_signature,
    mobilevit_signature,
    se_signature,
    stage_layout,
    stem_signature,
)
from ._genome import CONV_MIXERS, STAGE_STRIDES, Genome, StageGenome
from ._model import reparameterize

if TYPE_CHECKING:
    from ._space import SearchSpace

__all__ = ["UNIT_TYPES", "build_unit", "space_unit_signatures", "unit_signatures", "units_of"]

#: The ``type`` of every unit signature.
UNIT_TYPES = ("stem", "downsample", "cpe", "block", "mobilevit", "se", "head")


def unit_signatures(genome: Genome, resolution: int | None = None, num_classes: int = 1000) -> list[dict[str, Any]]:
    """The signatures of ``genome``'s deployed network at ``resolution`` (default: the genome's), one per unit in
    network order: feeding an input through ``build_unit`` of each in turn computes the network."""
    if resolution is not None and resolution != genome.resolution:
        genome = genome.with_resolution(resolution)
    res = genome.resolution
    sigs = [stem_signature(genome.stem, res, genome.stages[0].width)]
    c_prev = genome.stages[0].width
    for i, st in enumerate(genome.stages):
        sigs += [sig for _, sig in stage_layout(c_prev, st, res // STAGE_STRIDES[i])]
        c_prev = st.width
    sigs.append(head_signature(genome.head, c_prev, res // STAGE_STRIDES[-1], num_classes))
    return sigs


def units_of(genome: Genome, resolution: int | None = None,
             num_classes: int = 1000) -> list[tuple[dict[str, Any], int]]:
    """``(signature, count)`` for each distinct unit of ``genome``'s network, in order of first occurrence (the
    signatures' keys sorted)."""
    counts = Counter(json.dumps(s, sort_keys=True) for s in unit_signatures(genome, resolution, num_classes))
    return [(json.loads(text), n) for text, n in counts.items()]


def build_unit(signature: dict[str, Any]) -> nn.Module:
    """The deployed module a signature describes (random weights; eval mode)."""
    return reparameterize(create_unit(signature).eval())


def space_unit_signatures(space: SearchSpace, num_classes: int = 1000) -> Iterator[dict[str, Any]]:
    """Every signature a genome of ``space`` can contain (at the space's resolution), each once."""
    seen: set[str] = set()

    def emit(sig: dict[str, Any]) -> Iterator[dict[str, Any]]:
        k = json.dumps(sig, sort_keys=True)
        if k not in seen:
            seen.add(k)
            yield sig

    res = space.resolution
    se_flags = sorted({m != "none" for m in space.se_modes} | ({False} if "alternate" in space.se_modes else set()))
    for stem, w in itertools.product(space.stems, space.stages[0].widths):
        yield from emit(stem_signature(stem, res, w))
    prev_widths = space.stages[0].widths
    for i, ch in enumerate(space.stages):
        hw = res // STAGE_STRIDES[i]
        if i:
            for kind, c_in, c_out in itertools.product(space.downsamples, prev_widths, ch.widths):
                for r in (space.ffn_ratios if kind == "repvit" else space.ffn_ratios[:1]):
                    yield from emit(downsample_signature(kind, c_in, c_out, hw * 2, r))
        for w, mixer in itertools.product(ch.widths, ch.mixers):
            kernels = space.kernel_sizes if mixer in CONV_MIXERS else (3,)
            if mixer == "attention":
                yield from emit(cpe_signature(w, hw))
            if mixer == "mobilevit":
                patches = [p for p in space.patch_sizes if hw % p == 0]
                for k, r, d, p in itertools.product(kernels, space.ffn_ratios, range(ch.depth[0], ch.depth[1] + 1),
                                                    patches):
                    yield from emit(mobilevit_signature(d, k, p, r, w, hw))
                if any(m != "none" for m in space.se_modes):
                    yield from emit(se_signature(w, hw))
                continue
            for k, r, fk, se in itertools.product(kernels, space.ffn_ratios, space.ffn_kernel_sizes, se_flags):
                st = StageGenome(depth=1, width=w, mixer=mixer, kernel_size=k, ffn_ratio=r, ffn_kernel_size=fk)
                yield from emit(block_signature(st, w, hw, se))
        prev_widths = ch.widths
    hw = res // STAGE_STRIDES[-1]
    for kind, w in itertools.product(space.heads, space.stages[-1].widths):
        yield from emit(head_signature(kind, w, hw, num_classes))
