"""SearchSpace: sampling, Optuna suggestion, validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pytest

from search_space import Genome, InvalidGenomeError, SearchSpace, zoo


def test_sample_is_valid_and_seeded():
    space = SearchSpace()
    a = [space.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    genomes = [space.sample(s) for s in range(200)]
    assert all(isinstance(g, Genome) and space.contains(g) for g in genomes)
    mixers = {st.mixer for g in genomes for st in g.stages}
    assert mixers == {"repdw", "repmixer", "identity", "attention", "mobilevit"}
    assert all(st.mixer not in ("attention",) for g in genomes for st in g.stages[:2])


def test_mobilevit_only_where_the_map_divides():
    space = SearchSpace(resolution=224)  # stride 32 map is 7x7: no 2x2 patches there
    assert "mobilevit" not in space.stages[3].mixers and "mobilevit" in space.stages[2].mixers
    assert "mobilevit" in SearchSpace(resolution=256).stages[3].mixers


def test_suggest_with_optuna_round_trips_params():
    space = SearchSpace(resolution=256)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=0))
    seen = []

    def objective(trial):
        g = space.suggest(trial)
        seen.append(g)
        assert space.params_of(g) == trial.params
        return sum(g.depths), sum(g.widths)

    study.optimize(objective, n_trials=12)
    assert len(seen) == 12 and all(space.contains(g) for g in seen)
    # a known genome can be enqueued through its parameters and comes back identical
    g = space.sample(3)
    study.enqueue_trial(space.params_of(g))
    got = []
    study.optimize(lambda t: (got.append(space.suggest(t)) or 0.0, 0.0), n_trials=1)
    assert got[0] == g


def test_validate_names_the_field():
    space = SearchSpace(resolution=224, widths=((32,), (64,), (128,), (256,)))
    with pytest.raises(InvalidGenomeError, match=r"stages\[0\].width"):
        space.validate(zoo["repvit_m0_9"])
    with pytest.raises(InvalidGenomeError, match="resolution"):
        space.validate(zoo["fastvit_t8"])
    g = space.sample(0)
    bad = dataclasses.replace(g, stages=(dataclasses.replace(g.stages[0], depth=9),) + g.stages[1:])
    with pytest.raises(InvalidGenomeError, match=r"stages\[0\].depth"):
        space.validate(bad)


@pytest.mark.parametrize("kwargs, field", [
    (dict(mixers=("swin",)), "mixers"),
    (dict(depths=((1, 2),) * 3), "depths"),
    (dict(depths=((3, 1),) * 4), r"depths\[0\]"),
    (dict(resolution=100), "resolution"),
    (dict(kernel_sizes=(4,)), "kernel_sizes"),
    (dict(mixers=("attention",)), "mixers"),
])
def test_bad_space_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SearchSpace(**kwargs)
