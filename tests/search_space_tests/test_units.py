"""The network's deployable units (what ``latency_lut`` prices) are exactly the deployed network: ``RepNASStage``
and ``search_space.unit_signatures`` come from one layout, and ``build_unit`` of each signature, given the network's
weights, recomposes the deployed network (same parameters, same output)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import latency_lut
from latency_lut._signatures import signature_key
from search_space import (
    SearchSpace,
    build_model,
    build_unit,
    reparameterize,
    unit_signatures,
    units_of,
)
from search_space.testing import randomize_

NUM_CLASSES = 10
# every mixer, SE mode, downsampling, stem and head, small enough to build quickly on a CPU
SMALL = SearchSpace(resolution=64, widths=((16, 24), (32,), (48,), (64,)), depths=((1, 2), (1, 2), (1, 3), (1, 2)),
                    ffn_ratios=(2, 3))


def _network_modules(deployed: nn.Module) -> list[nn.Module | tuple[nn.Module, nn.Module]]:
    """The deployed network's parts in forward order, read off the module tree (not from the layout code)."""
    parts: list = [deployed.stem]
    for stage in deployed.stages:
        parts += [m for m in (stage.downsample, stage.pos_emb) if not isinstance(m, nn.Identity)]
        parts += list(stage.blocks)
    parts.append((deployed.final_conv, deployed.head))
    return parts


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _check_units_are_the_network(genome) -> None:
    deployed = reparameterize(randomize_(build_model(genome, num_classes=NUM_CLASSES), seed=1).eval())
    sigs = unit_signatures(genome, num_classes=NUM_CLASSES)
    assert sum(n for _, n in units_of(genome, num_classes=NUM_CLASSES)) == len(sigs)
    built = [build_unit(s) for s in sigs]
    # the same parameters: every unit, counted as often as it occurs, and the deployed network (its priced head)
    assert sum(_n_params(u) for u in built) == _n_params(deployed)
    parts = _network_modules(deployed)
    assert [s["type"] for s in sigs][-1] == "head" and len(parts) == len(sigs), [s["type"] for s in sigs]
    for sig, unit, part in zip(sigs, built, parts):
        if sig["type"] == "head":
            final_conv, head = part
            assert isinstance(head.norm, nn.Identity)  # the linear head's BN is folded into fc
            unit.final_conv.load_state_dict(final_conv.state_dict())
            unit.fc.load_state_dict(head.fc.state_dict())
        else:
            assert type(unit) is type(part), sig
            assert {k: v.shape for k, v in unit.state_dict().items()} == \
                   {k: v.shape for k, v in part.state_dict().items()}, sig
            unit.load_state_dict(part.state_dict())
    # the units, fed one after another, compute the deployed network; the map sizes are the signatures'
    x = torch.randn(2, 3, genome.resolution, genome.resolution)
    with torch.no_grad():
        y = x
        for sig, unit in zip(sigs, built):
            assert list(y.shape[1:]) == sig["in"], sig
            y = unit(y)
        torch.testing.assert_close(y, deployed(x), atol=1e-4, rtol=1e-4)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31 - 1))
def test_the_units_of_a_random_genome_compose_to_its_deployed_network(seed):
    _check_units_are_the_network(SMALL.sample(seed))


@pytest.mark.parametrize("k", range(3))
def test_every_gene_value_decomposes(k):
    """Genomes taking each gene's values in turn, so every unit type and option occurs in some test."""
    genome = SMALL.draw(lambda name, choices: choices[(k + len(name)) % len(choices)],
                        lambda name, lo, hi: lo + (k + len(name)) % (hi - lo + 1))
    _check_units_are_the_network(genome)


def test_latency_lut_prices_the_units_search_space_decomposes():
    genome = SMALL.sample(7)
    units = latency_lut.units_of_genome(genome, 64)
    assert [(u.signature, u.count) for u in units] == units_of(genome, 64)
    assert [u.key for u in units] == [signature_key(s) for s, _ in units_of(genome, 64)]
