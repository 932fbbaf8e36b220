"""Whole networks: every mixer, stem, downsampling layer and head; and a property test over the space."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from timm.utils import reparameterize_model
from torch import nn

from search_space import (
    DOWNSAMPLES,
    HEADS,
    MIXERS,
    STEMS,
    Genome,
    ModelArgumentError,
    SearchSpace,
    StageGenome,
    build_model,
    reparameterize,
)
from search_space._blocks import AttentionMixer, IdentityMixer
from search_space._layers import RepMixer, RepVggDw
from search_space.testing import randomize_, rel_error, unfoldable_batchnorms

RES = 64


def _genome(mixer="repdw", stem="repvit", downsample="repvit", head="linear", **stage) -> Genome:
    stages = []
    for i, w in enumerate((16, 32, 64, 96)):
        m = mixer if i >= {"attention": 2, "mobilevit": 1}.get(mixer, 0) else "repdw"
        stages.append(StageGenome(depth=2, width=w, mixer=m, downsample="none" if i == 0 else downsample,
                                  se="alternate", **stage))
    return Genome(stages=tuple(stages), stem=stem, head=head, resolution=RES)


def _check(genome: Genome, num_classes=10, seed=0):
    model = randomize_(build_model(genome, num_classes=num_classes), seed=seed).eval()
    x = torch.randn(2, 3, genome.resolution, genome.resolution, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        before = model(x)
        deployed = reparameterize(copy.deepcopy(model))
        after = deployed(x)
    assert torch.isfinite(before).all()
    assert rel_error(before, after) <= 1e-4, rel_error(before, after)
    return model, deployed, x, before


def _structure(deployed: nn.Module) -> None:
    assert unfoldable_batchnorms(deployed) == []
    for m in deployed.modules():
        if isinstance(m, (RepVggDw, RepMixer)):
            assert [type(c) for c in m.children()] == [nn.Conv2d]
        if isinstance(m, IdentityMixer):
            assert [n for n, _ in m.named_parameters()] == ["norm.weight", "norm.bias"]
        if isinstance(m, AttentionMixer):
            assert isinstance(m.norm, nn.Identity) and m.layer_scale is None


@pytest.mark.parametrize("mixer", MIXERS)
def test_every_mixer(mixer):
    _, deployed, _, _ = _check(_genome(mixer, kernel_size=5, ffn_kernel_size=3))
    _structure(deployed)


@pytest.mark.parametrize("stem", STEMS)
def test_every_stem(stem):
    _structure(_check(_genome(stem=stem))[1])


@pytest.mark.parametrize("downsample", DOWNSAMPLES)
def test_every_downsample(downsample):
    _structure(_check(_genome(downsample=downsample))[1])


@pytest.mark.parametrize("head", HEADS)
def test_every_head(head):
    _structure(_check(_genome(head=head))[1])


@pytest.mark.parametrize("se", ["none", "alternate", "all"])
def test_se_placement(se):
    g = _genome()
    g = dataclasses.replace(g, stages=tuple(dataclasses.replace(s, se=se, depth=3) for s in g.stages))
    model = build_model(g)
    flags = [not isinstance(b.se, nn.Identity) for b in model.stages[1].blocks]
    assert flags == {"none": [False] * 3, "alternate": [True, False, True], "all": [True] * 3}[se]
    assert isinstance(model.stages[1].downsample.pre_block.se, nn.Identity)  # never SE before a downsample


_SPACE = SearchSpace(resolution=RES, widths=((16, 24, 32), (32, 48), (64, 96), (96, 128)), depths=((1, 2),) * 4)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_genomes_fold_exactly(seed):
    genome = _SPACE.sample(np.random.default_rng(seed))
    model, deployed, x, before = _check(genome, seed=seed % 1000)
    _structure(deployed)
    # idempotent, and timm's walker agrees
    reparameterize(deployed)
    with torch.no_grad():
        assert rel_error(before, deployed(x)) <= 1e-4
        assert rel_error(before, reparameterize_model(model)(x)) <= 1e-4


def test_timm_interface():
    model = build_model(_genome(head="mobileone"), num_classes=5)
    x = torch.randn(1, 3, RES, RES)
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features == 192
    assert model.forward_head(feats, pre_logits=True).shape == (1, 192)
    assert model(x).shape == (1, 5) and model.num_classes == 5
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    model.reset_classifier(3)
    assert model(x).shape == (1, 3) and model.get_classifier().out_features == 3
    model.reset_classifier(0)
    assert model(x).shape == (1, 192)
    model.set_grad_checkpointing(True)
    model.train()
    model(x).sum().backward()


def test_mobilevit_forward_resizes_indivisible_input():
    """At 96 px the stride-32 map is 3x3: the MobileViT block resizes it (as timm's does) and folding still holds;
    the genome itself is only valid at resolutions where nothing resizes."""
    g = _genome("mobilevit")
    model = randomize_(build_model(g), seed=1).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        before = model(x)
        after = reparameterize(copy.deepcopy(model))(x)
    assert torch.isfinite(before).all() and rel_error(before, after) <= 1e-4
    with pytest.raises(ValueError, match="does not divide by patch size"):
        g.with_resolution(96)


def test_bad_constructor_arguments():
    with pytest.raises(ModelArgumentError, match="^num_classes"):
        build_model(_genome(), num_classes=-1)
    with pytest.raises(ModelArgumentError, match="^global_pool"):
        build_model(_genome(), global_pool="mean")
    with pytest.raises(TypeError):
        build_model(_genome(), 10)  # keyword-only, as the timm builder passes them
    with pytest.raises(ValueError, match="genome"):
        build_model(42)
