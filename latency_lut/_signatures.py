"""Block signatures: the units a network is priced by.

A signature is a small JSON object naming a block type and every argument that changes its cost,
including its input shape (``in``: C, H, W) and stride. The same signature always builds the same
deployed (re-parameterized) module, so a LUT entry measured once prices every occurrence. A
network's latency is the sum of its units' entries (stem, downsampling layers, positional encodings,
blocks, head).

The decomposition itself (which units a network is made of, and the module each signature builds) belongs to
:mod:`search_space`, which builds the network from the same layout; this module only keys the signatures for the
LUT.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

import search_space
from search_space import Genome, SearchSpace

__all__ = ["Unit", "build_unit", "enumerate_space", "signature_key", "units_of_genome"]

#: The unit types, as :mod:`search_space` defines them.
BLOCK_TYPES = search_space.UNIT_TYPES


def signature_key(signature: dict[str, Any]) -> str:
    """The LUT key of a signature: a hash of its canonical JSON."""
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


def build_unit(signature: dict[str, Any]) -> nn.Module:
    """The deployed module a signature describes (random weights; eval mode): :func:`search_space.build_unit`."""
    return search_space.build_unit(signature)


def units_of_genome(genome: Genome, resolution: int | None = None, num_classes: int = 1000) -> list[Unit]:
    """The units of ``genome``'s network at ``resolution`` (default: the genome's), with multiplicity
    (:func:`search_space.units_of`)."""
    return [Unit(sig, n) for sig, n in search_space.units_of(genome, resolution, num_classes)]


def enumerate_space(space: SearchSpace, num_classes: int = 1000) -> Iterator[dict[str, Any]]:
    """Every signature a genome of ``space`` can contain (at the space's resolution), each once
    (:func:`search_space.space_unit_signatures`)."""
    return search_space.space_unit_signatures(space, num_classes)
