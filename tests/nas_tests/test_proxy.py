"""Proxy training (learning, determinism, early stopping, failures) and the zero-cost scores."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from nas import (
    ZERO_COST_METHODS,
    ProxyConfig,
    ProxyData,
    ProxyTrainingError,
    SearchConfigError,
    _proxy,
    load_dataset,
    proxy_resolution,
    train_proxy,
    zero_cost_score,
)
from nas._proxy import proxy_genome
from search_space import Genome, SearchSpace, StageGenome, build_model, reparameterize, zoo

#: A quick recipe for tests: no hopeless check unless a test asks for one.
FAST = ProxyConfig(epochs=2, batch_size=32, train_size=None, val_size=None, bn_recalibration=128,
                   hopeless_after=None)


def _tiny(mixer3: str = "repdw") -> Genome:
    widths = (16, 24, 32, 48)
    return Genome(stages=tuple(
        StageGenome(depth=1, width=w, mixer=mixer3 if i == 3 else "repdw", downsample="none" if i == 0 else "repvit")
        for i, w in enumerate(widths)), resolution=224)


@pytest.fixture(scope="module")
def synthetic() -> ProxyData:
    return load_dataset("synthetic", train_size=512, val_size=200)


def test_learns_above_chance(synthetic: ProxyData) -> None:
    records: list[dict] = []
    r = train_proxy(_tiny(), synthetic, config=FAST, progress_callback=records.append)
    assert r.accuracy > 0.5, r  # chance is 0.1
    assert (r.steps, r.epochs_run, r.stopped_early, r.stop_reason, r.resolution) == (32, 2.0, False, None, 32)
    assert [h["kind"] for h in r.history] == ["check", "final"] and records == list(r.history)
    assert r.history[-1]["accuracy"] == r.accuracy and math.isfinite(r.loss) and r.state_dict is None
    assert r.num_params == sum(p.numel() for p in build_model(_tiny(), num_classes=10).parameters())
    assert r.to_dict()["accuracy"] == r.accuracy and "state_dict" not in r.to_dict()


def test_deterministic_and_keeps_weights(synthetic: ProxyData) -> None:
    cfg = dataclasses.replace(FAST, epochs=1)
    state = torch.random.get_rng_state()
    a = train_proxy(_tiny(), synthetic, config=cfg, seed=1, keep_weights=True)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    b = train_proxy(_tiny(), synthetic, config=cfg, seed=1)
    assert (a.accuracy, a.loss) == (b.accuracy, b.loss)
    model = build_model(_tiny(), num_classes=10)
    model.load_state_dict(a.state_dict)
    reparameterize(model.eval())
    x = _proxy.to_float(synthetic.val_x[:100], synthetic, 32)
    acc = (model(x).argmax(1) == synthetic.val_y[:100]).float().mean().item()
    assert acc > 0.3


def test_grayscale_is_repeated_to_rgb(synthetic: ProxyData) -> None:
    gray = ProxyData(name="gray", num_classes=10, in_chans=1, train_x=synthetic.train_x[:, :1],
                     train_y=synthetic.train_y, val_x=synthetic.val_x[:, :1], val_y=synthetic.val_y)
    r = train_proxy(_tiny(), gray, config=dataclasses.replace(FAST, epochs=1, resolution=48), keep_weights=True)
    assert r.resolution == 48 and r.state_dict["stem.0.conv.weight"].shape[1] == 3


def test_hopeless_candidate_stops_early(synthetic: ProxyData) -> None:
    g = torch.Generator().manual_seed(0)
    noise = dataclasses.replace(synthetic, train_y=torch.randint(0, 10, synthetic.train_y.shape, generator=g),
                                val_y=torch.randint(0, 10, synthetic.val_y.shape, generator=g))
    cfg = dataclasses.replace(FAST, lr=0.0, hopeless_after=0.25, hopeless_min_steps=4)
    r = train_proxy(_tiny(), noise, config=cfg)
    assert r.stopped_early and r.stop_reason.startswith("hopeless: ") and r.steps == 8
    assert r.epochs_run == 0.5 and 0.0 <= r.accuracy <= 0.15


def test_time_limit(synthetic: ProxyData) -> None:
    r = train_proxy(_tiny(), synthetic, config=dataclasses.replace(FAST, max_seconds=1e-3))
    assert r.stopped_early and r.stop_reason.startswith("time limit") and r.steps == 1


class _Exploding(nn.Module):
    """A linear classifier whose logits turn NaN, or grow huge, after the first step."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.fc = nn.Linear(3 * 32 * 32, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.fc(x.flatten(1))
        if self.calls > 1:
            out = out * (float("nan") if self.mode == "nan" else 1e4)
        return out


@pytest.mark.parametrize("mode", ["nan", "diverged"])
def test_training_failures_raise(synthetic: ProxyData, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setattr(_proxy, "build_model", lambda *a, **k: _Exploding(mode))
    with pytest.raises(ProxyTrainingError) as info:
        train_proxy(_tiny(), synthetic, config=FAST)
    assert info.value.reason == mode
    assert ("step 2" in str(info.value)) if mode == "nan" else ("for 5 steps" in str(info.value))


def test_huge_learning_rate_fails(synthetic: ProxyData) -> None:
    with pytest.raises(ProxyTrainingError) as info:
        train_proxy(_tiny(), synthetic, config=dataclasses.replace(FAST, lr=1e6, grad_clip=None))
    assert info.value.reason in ("nan", "diverged")


def test_callback_exception_aborts(synthetic: ProxyData) -> None:
    def stop(record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_proxy(_tiny(), synthetic, config=dataclasses.replace(FAST, hopeless_after=0.5), progress_callback=stop)


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "`epochs`"),
    (dict(resolution=40), "multiple of 16"),
    (dict(lr=float("nan")), "`lr`"),
    (dict(train_size=1), "`train_size`"),
    (dict(hopeless_after=0.0), "`hopeless_after`"),
    (dict(max_seconds=-1), "`max_seconds`"),
    (dict(batch_size=True), "`batch_size`"),
    (dict(width_multiplier=0.0), "`width_multiplier`"),
    (dict(width_multiplier=9.0), "`width_multiplier`"),
    (dict(width_multiplier="0.5"), "`width_multiplier`"),
    (dict(min_stage_map=0), "`min_stage_map`"),
    (dict(min_stage_map=1.5), "`min_stage_map`"),
])
def test_config_is_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(SearchConfigError, match=match):
        ProxyConfig(**kwargs)


def test_config_round_trip() -> None:
    cfg = ProxyConfig(epochs=3, max_seconds=10.0)
    assert ProxyConfig.from_dict(cfg.to_dict()) == cfg
    cfg = ProxyConfig(resolution=64, width_multiplier=0.5, min_stage_map=2)
    assert ProxyConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["min_stage_map"] == 2
    with pytest.raises(SearchConfigError, match="unknown proxy option"):
        ProxyConfig.from_dict({"epoch": 1})


def test_every_zoo_genome_is_trainable(synthetic: ProxyData) -> None:
    assert {name: proxy_resolution(g, 32) for name, g in zoo.items()} == {
        name: 64 if name == "mobilevit_xs" else 32 for name in zoo}
    tiny_data = load_dataset("synthetic", train_size=32, val_size=16)
    cfg = ProxyConfig(epochs=1, batch_size=16, train_size=None, val_size=None, bn_recalibration=16,
                      hopeless_after=None)
    for name, genome in zoo.items():
        r = train_proxy(genome, tiny_data, config=cfg)
        assert r.steps == 2 and math.isfinite(r.loss), name


def test_sampled_genomes_fit_the_proxy_resolution() -> None:
    space = SearchSpace()
    for seed in range(50):
        g = space.sample(seed)
        assert proxy_resolution(g, 32) in (32, 64)
        assert proxy_resolution(g, 16) >= 16


def test_defaults_keep_the_genome_and_resolution() -> None:
    cfg = ProxyConfig()
    assert (cfg.width_multiplier, cfg.min_stage_map, cfg.resolution) == (1.0, None, 32)
    g = _tiny()
    assert proxy_genome(g, cfg.width_multiplier) is g
    assert proxy_resolution(g, 32, min_stage_map=None) == 32


def test_width_multiplier_scales_the_trained_network(synthetic: ProxyData) -> None:
    half = proxy_genome(_tiny(), 0.5)
    assert half.widths == (8, 16, 16, 24) and half.depths == _tiny().depths
    assert proxy_genome(_tiny(), 0.1).widths == (8, 8, 8, 8)  # never below 8
    assert proxy_genome(_tiny(), 2.0).widths == (32, 48, 64, 96)
    r = train_proxy(_tiny(), synthetic, config=dataclasses.replace(FAST, epochs=1, width_multiplier=0.5))
    assert r.num_params == sum(p.numel() for p in build_model(half, num_classes=10).parameters())
    assert r.num_params < sum(p.numel() for p in build_model(_tiny(), num_classes=10).parameters())


@pytest.mark.parametrize("multiplier", [0.25, 0.5, 0.75])
def test_scaled_genomes_stay_valid(multiplier: float) -> None:
    genomes = list(zoo.values()) + [SearchSpace().sample(s) for s in range(20)]
    for g in genomes:
        scaled = proxy_genome(g, multiplier)
        assert all(w % 8 == 0 and w >= 8 for w in scaled.widths)
        res = proxy_resolution(scaled, 32, min_stage_map=2)
        with torch.no_grad():
            out = build_model(scaled, num_classes=10).eval()(torch.zeros(1, 3, res, res))
        assert out.shape == (1, 10), g.key()


def test_min_stage_map_raises_the_resolution(synthetic: ProxyData) -> None:
    # every stage sees at least a 2x2 map at 64 px (stride 32); MobileViT's divisibility still holds on top
    assert {n: proxy_resolution(g, 32, min_stage_map=2) for n, g in zoo.items()} == {n: 64 for n in zoo}
    assert {n: proxy_resolution(g, 32, min_stage_map=1) for n, g in zoo.items()} == {
        n: 64 if n == "mobilevit_xs" else 32 for n in zoo}
    assert proxy_resolution(_tiny(), 32, min_stage_map=3) == 96
    assert proxy_resolution(zoo["mobilevit_xs"], 32, min_stage_map=3) == 128  # a 3x3 map does not take 2x2 patches
    assert proxy_resolution(_tiny(), 128, min_stage_map=2) == 128  # never lowered
    with pytest.raises(SearchConfigError, match="`min_stage_map`"):
        proxy_resolution(_tiny(), 32, min_stage_map=0)
    r = train_proxy(_tiny(), synthetic, config=dataclasses.replace(FAST, epochs=1, min_stage_map=2))
    assert r.resolution == 64


def test_train_loss_is_the_last_epoch_mean(synthetic: ProxyData) -> None:
    r = train_proxy(_tiny(), synthetic, config=FAST)
    # FAST: 2 epochs of 16 steps, a check at the end of epoch 1: the final record averages exactly epoch 2
    assert r.steps == 32 and r.history[0]["step"] == 16
    assert r.train_loss == pytest.approx(r.history[-1]["train_loss"])
    assert r.to_dict()["train_loss"] == r.train_loss and r.score_split == "val"


def test_scores_on_the_test_split(synthetic: ProxyData) -> None:
    cfg = dataclasses.replace(FAST, epochs=1)
    val = train_proxy(_tiny(), synthetic, config=cfg)
    test = train_proxy(_tiny(), synthetic, config=cfg, score_split="test")
    assert test.score_split == "test" and test.steps == val.steps and test.train_loss == val.train_loss
    n_test = len(synthetic.test_y)
    assert abs(test.accuracy * n_test - round(test.accuracy * n_test)) < 1e-6  # scored on all the test images
    assert (test.accuracy, test.loss) != (val.accuracy, val.loss)
    with pytest.raises(SearchConfigError, match="`score_split`"):
        train_proxy(_tiny(), synthetic, config=cfg, score_split="train")
    no_test = dataclasses.replace(synthetic, test_x=None, test_y=None)
    with pytest.raises(SearchConfigError, match="no test set"):
        train_proxy(_tiny(), no_test, config=cfg, score_split="test")


# -- zero-cost -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ZERO_COST_METHODS)
def test_zero_cost_scores_are_finite_and_deterministic(synthetic: ProxyData, method: str) -> None:
    for genome in (_tiny(), _tiny("attention"), zoo["mobilevit_xs"]):
        a = zero_cost_score(genome, synthetic, method=method, batch_size=32)
        b = zero_cost_score(genome, synthetic, method=method, batch_size=32)
        assert math.isfinite(a) and a == b, (method, a, b)
    if method == "params":
        deployed = reparameterize(build_model(_tiny(), num_classes=10).eval())
        assert zero_cost_score(_tiny(), synthetic, method=method) == sum(p.numel() for p in deployed.parameters())


def test_zero_cost_rejects_unknown_method(synthetic: ProxyData) -> None:
    with pytest.raises(SearchConfigError, match="`method`"):
        zero_cost_score(_tiny(), synthetic, method="grasp")
