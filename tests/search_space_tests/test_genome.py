"""Genome validation, JSON round trips and clear errors for bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest

from search_space import Genome, InvalidGenomeError, RepNASError, StageGenome, zoo


@pytest.mark.parametrize("name", sorted(zoo))
def test_json_round_trip(name):
    g = zoo[name]
    assert Genome.from_json(g.to_json()) == g
    assert Genome.from_dict(json.loads(g.to_json(indent=2))) == g
    assert Genome.from_json(g.to_json()).key() == g.key()


def test_key_is_stable_and_ignores_unused_genes():
    g = zoo["riformer_s12"]  # identity mixer: kernel_size is not read
    other = dataclasses.replace(g, stages=(dataclasses.replace(g.stages[0], kernel_size=7),) + g.stages[1:])
    assert other != g and other.key() == g.key()
    assert len({z.key() for z in zoo.values()}) == len(zoo)
    assert g.key() == Genome.from_json(g.to_json()).key() and len(g.key()) == 16


def _bad(mutate):
    d = json.loads(zoo["repvit_m0_9"].to_json())
    mutate(d)
    return json.dumps(d)


@pytest.mark.parametrize("text, field", [
    ("{not json", "malformed JSON"),
    ("[1, 2]", "genome"),
    (_bad(lambda d: d["stages"][2].update(mixer="swin")), "stages[2].mixer"),
    (_bad(lambda d: d["stages"][1].update(kernel_size=4)), "stages[1].kernel_size"),
    (_bad(lambda d: d["stages"][0].update(depth=0)), "stages[0].depth"),
    (_bad(lambda d: d["stages"][0].update(depth=2.5)), "stages[0].depth"),
    (_bad(lambda d: d["stages"][3].update(width=100)), "stages[3].width"),
    (_bad(lambda d: d["stages"][3].update(width=True)), "stages[3].width"),
    (_bad(lambda d: d["stages"][1].update(se="half")), "stages[1].se"),
    (_bad(lambda d: d["stages"][1].update(downsample="none")), "stages[1].downsample"),
    (_bad(lambda d: d["stages"][0].update(downsample="repvit")), "stages[0].downsample"),
    (_bad(lambda d: d["stages"][0].update(mixer="attention")), "stages[0].mixer"),
    (_bad(lambda d: d["stages"][0].update(colour="red")), "stages[0].colour"),
    (_bad(lambda d: d["stages"][2].pop("width")), "stages[2].width"),
    (_bad(lambda d: d["stages"].pop()), "stages: expected 4 stages, got 3"),
    (_bad(lambda d: d["stages"].append(d["stages"][-1])), "stages: expected 4 stages, got 5"),
    (_bad(lambda d: d.pop("stages")), "stages"),
    (_bad(lambda d: d.update(stem="vit")), "stem"),
    (_bad(lambda d: d.update(head="mlp")), "head"),
    (_bad(lambda d: d.update(resolution=200)), "resolution"),
    (_bad(lambda d: d.update(resolution=-32)), "resolution"),
    (_bad(lambda d: d.update(extra=1)), "extra"),
])
def test_bad_genomes_name_the_field(text, field):
    with pytest.raises(ValueError) as info:
        Genome.from_json(text)
    assert field in str(info.value)
    assert isinstance(info.value, InvalidGenomeError) and isinstance(info.value, RepNASError)


def test_mobilevit_divisibility_is_rejected_not_resized():
    g = zoo["mobilevit_xs"]
    assert g.resolution == 256
    with pytest.raises(ValueError, match=r"stages\[3\].patch_size.*MobileViT stage 3 sees a 7x7 feature map at "
                                         r"resolution 224.*patch size 2"):
        g.with_resolution(224)
    d = json.loads(g.to_json())
    d["stages"][1]["patch_size"] = 4
    d["resolution"] = 32 * 4 * 1  # stage 1 (stride 8) sees 16x16, stage 3 sees 4x4: fine; 96 would not be
    Genome.from_dict(d)
    d["resolution"] = 96
    with pytest.raises(ValueError, match=r"stages\[3\]"):
        Genome.from_dict(d)


def test_direct_construction_validates():
    with pytest.raises(ValueError, match="stages"):
        Genome(stages=(StageGenome(depth=1, width=32),))
    with pytest.raises(ValueError, match=r"stages\[0\].ffn_ratio"):
        Genome(stages=(StageGenome(depth=1, width=32, ffn_ratio=0),) + zoo["repvit_m0_9"].stages[1:])
