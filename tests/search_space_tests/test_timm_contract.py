"""timm's model contract, as timm's own tests/test_models.py checks it, for every kind of repnas_* entrypoint.

The zoo (each model, training form and after ``reparameterize``), random genomes through ``genome=``
(hypothesis) and a folder registered with ``register_dir``. Input sizes follow timm's test sizes: forward
at the config's ``input_size``, backward / TorchScript / fx at up to 128 px, features at up to 96 px
(where ``mobilevit_xs``'s stride-32 map is 3x3 and does not divide by its 2x2 patches).
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from timm.models import get_notrace_functions, get_notrace_modules
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import search_space
from search_space import ModelArgumentError, RepNASError, SearchSpace, reparameterize, zoo
from search_space._blocks import MobileViTBlock
from search_space._export import export_onnx
from search_space._genome import MIXER_MIN_STAGE
from search_space._model import default_cfg_for
from search_space.testing import randomize_, unfoldable_batchnorms

FORMS = ("train", "deployed")
ZOO = sorted(zoo)
STRIDES = (4, 8, 16, 32)
TRACER_KWARGS = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                     param_shapes_constant=True)


def _variant(name: str) -> str:
    return f"repnas_{name}"


def _create(variant: str, form: str, *, seed: int = 0, **kwargs) -> nn.Module:
    """``timm.create_model(variant, **kwargs)``, folded for ``form='deployed'`` (non-trivial BN statistics)."""
    torch.manual_seed(seed)
    model = timm.create_model(variant, **kwargs)
    if form == "deployed":
        randomize_(model, seed=seed).eval()
        reparameterize(model)
        assert unfoldable_batchnorms(model) == []
    return model


def _size(model: nn.Module, target: int) -> tuple[int, int, int]:
    """timm's ``_get_input_size``: the config's input size, capped at ``target``."""
    return tuple(min(s, target) for s in model.pretrained_cfg["input_size"])


def _x(size, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(seed))


# -- checks shared by the zoo, random genomes and registered folders ----------------------------------------------
def check_forward(variant: str, form: str, **kw) -> None:
    model = _create(variant, form, **kw).eval()
    x = _x(_size(model, 384))
    with torch.no_grad():
        out = model(x)
        model.set_grad_checkpointing(True)
        out2 = model(x)
    assert out.shape == (1, model.num_classes) and torch.isfinite(out).all()
    torch.testing.assert_close(out2, out, rtol=1e-4, atol=1e-5)


def check_backward(variant: str, form: str, **kw) -> None:
    model = _create(variant, form, num_classes=42, **kw).train()
    out = model(_x(_size(model, 128), batch=2))
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert out.shape == (2, 42) and torch.isfinite(out).all()


def check_default_cfg(variant: str, form: str, **kw) -> None:
    model = _create(variant, form, **kw).eval()
    cfg, sd = model.default_cfg, model.state_dict()
    assert model.pretrained_cfg is cfg and model.num_classes == cfg["num_classes"]
    assert model.num_features > 0 and model.head_hidden_size > 0
    assert cfg["input_size"] == (3, model.genome.resolution, model.genome.resolution)
    assert len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0] == model.in_chans
    # classifier and first_conv name real modules of this form; the first convs are the ones reading the image
    assert cfg["classifier"] + ".weight" in sd
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    first = (cfg["first_conv"],) if isinstance(cfg["first_conv"], str) else cfg["first_conv"]
    assert all(name + ".weight" in sd for name in first)

    x = _x(cfg["input_size"])
    readers = []  # the convolutions the image itself goes into
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: readers.append(n) if args[0] is x else None)
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        feats = model.forward_features(x)
    for h in hooks:
        h.remove()
    assert sorted(readers) == sorted(first)
    with torch.no_grad():
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape[1] == model.num_features and tuple(feats.shape[-2:]) == tuple(cfg["pool_size"])
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        pooled = model(x)
        assert pooled.shape == pre.shape
        torch.testing.assert_close(pooled, pre)  # no classifier: forward gives the pre-logits
        model.reset_classifier(0, "")
        unpooled = model(x)
        assert unpooled.ndim == 4 and tuple(unpooled.shape[-2:]) == tuple(cfg["pool_size"])
        torch.testing.assert_close(unpooled, feats)
        model.reset_classifier(7, "avg")
        assert model(x).shape == (1, 7) and model.get_classifier().out_features == 7
        fresh = _create(variant, form, num_classes=0, global_pool="", **kw).eval()
        out = fresh(x)
    assert out.ndim == 4 and out.shape[1] == fresh.num_features and tuple(out.shape[-2:]) == tuple(cfg["pool_size"])


def check_grad_checkpointing_backward(variant: str, form: str, size: int = 64, **kw) -> None:
    """One training step with gradient checkpointing gives the gradients of one without it (both paths:
    ``forward`` through ``checkpoint_seq`` and ``forward_intermediates`` through ``checkpoint``)."""
    model = _create(variant, form, num_classes=7, **kw).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    x = _x((3, size, size), batch=2)
    grads = []
    for m in (model, ckpt):
        _, inter = m.forward_intermediates(x)
        loss = m(x).square().mean() + sum(t.square().mean() for t in inter)
        loss.backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    missing = [n for n, g in grads[0].items() if g is None]
    assert not missing, f"no gradient for {missing}"
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


def check_torchscript(variant: str, form: str, **kw) -> None:
    with timm.layers.set_layer_config(scriptable=True):
        model = _create(variant, form, **kw).eval()
    x = _x(_size(model, 128))
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-6)


def _check_map_size(o: torch.Tensor, size: int, reduction: int) -> None:
    """A map at ``reduction`` of a ``size`` px input: each side rounded down or up (padded convs round up)."""
    lo, hi = size // reduction, math.ceil(size / reduction)
    assert all(lo <= d <= hi for d in o.shape[-2:]), f"{tuple(o.shape[-2:])} at 1/{reduction} of {size} px"


def _folded_like_training(net: nn.Module, x: torch.Tensor, seed: int) -> tuple[nn.Module, list[torch.Tensor]]:
    """``net`` (training form) with random BN statistics, folded in a copy: (the copy, its outputs on ``x``),
    after checking them against the training form's own outputs in eval mode."""
    randomize_(net, seed=seed).eval()
    folded = reparameterize(copy.deepcopy(net))
    assert unfoldable_batchnorms(folded) == []
    with torch.no_grad():
        ref, outs = net(x), folded(x)
    assert len(outs) == len(ref)
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)
    return folded, outs


def check_features(variant: str, form: str, size: int = 96, out_indices=None, levels=(0, 1, 2, 3), *, seed: int = 0,
                   **kw) -> None:
    """``features_only`` (timm's list extractor and its ``forward_intermediates`` getter); ``levels`` are the stages
    ``out_indices`` must select (written out by the caller, not computed by the code under test)."""
    levels = list(levels)
    extra = {} if out_indices is None else {"out_indices": out_indices}
    x = _x((3, size, size))
    # the training form; for form='deployed', a folded copy of it (with random BN statistics), checked against it
    feats = _create(variant, "train", seed=seed, features_only=True, **extra, **kw).eval()
    getter = _create(variant, "train", seed=seed, features_only=True, feature_cls="getter", **extra, **kw).eval()
    full = _create(variant, "train", seed=seed, **kw).eval()
    channels = [full.feature_info[i]["num_chs"] for i in levels]
    assert channels == [full.genome.stages[i].width for i in levels]
    assert feats.feature_info.channels() == getter.feature_info.channels() == channels
    assert feats.feature_info.reduction() == getter.feature_info.reduction() == [STRIDES[i] for i in levels]
    if form == "deployed":
        feats, outs = _folded_like_training(feats, x, seed)
        getter, outs_getter = _folded_like_training(getter, x, seed)
    else:
        with torch.no_grad():
            outs, outs_getter = feats(x), getter(x)
        with torch.no_grad():
            _, inter = full.forward_intermediates(x)
        # same seed, same weights: the list extractor, the getter and forward_intermediates agree
        for o, g, level in zip(outs, outs_getter, levels):
            torch.testing.assert_close(o, g)
            torch.testing.assert_close(o, inter[level])
    assert len(outs) == len(outs_getter) == len(levels)
    for o, g, c, level in zip(outs, outs_getter, channels, levels):
        assert o.shape[:2] == (1, c) and o.shape == g.shape and torch.isfinite(o).all()
        _check_map_size(o, size, STRIDES[level])


def check_intermediates(variant: str, form: str, size: int = 96, **kw) -> None:
    model = _create(variant, form, **kw).eval()
    x = _x((3, size, size))
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, output_fmt="NCHW")
        assert len(inter) == len(model.feature_info) == 4
        for o, info, stage, stride in zip(inter, model.feature_info, model.genome.stages, STRIDES):
            assert o.shape[1] == info["num_chs"] == stage.width
            _check_map_size(o, size, stride)
        torch.testing.assert_close(final, model.forward_features(x))
        only = model.forward_intermediates(x, indices=2, intermediates_only=True, stop_early=True)
        assert [o.shape for o in only] == [o.shape for o in inter[2:]]
        model.set_grad_checkpointing(True)
        final3, _ = model.forward_intermediates(x)
    torch.testing.assert_close(final3, final, rtol=1e-4, atol=1e-5)


def check_fx(variant: str, form: str, **kw) -> None:
    model = _create(variant, form, **kw).eval()
    x = _x(_size(model, 128))
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=TRACER_KWARGS)
    fx_model = create_feature_extractor(model, train_return_nodes=[train_nodes[-1]],
                                        eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=TRACER_KWARGS)
    with torch.inference_mode():
        out = model(x)
        fx_out = torch.cat(tuple(fx_model(x).values()))
    assert torch.equal(fx_out, out)
    # backward through the traced training graph
    model = _create(variant, form, num_classes=42, **kw).train()
    train_nodes, _ = get_graph_node_names(model, tracer_kwargs=TRACER_KWARGS)
    fx_model = create_feature_extractor(model, return_nodes=[train_nodes[-1]], tracer_kwargs=TRACER_KWARGS).train()
    out = torch.cat(tuple(fx_model(_x(_size(model, 128), batch=2)).values()))
    out.mean().backward()
    assert out.shape == (2, 42)
    assert all(p.grad is not None for p in fx_model.parameters())


def check_fx_plain_torchvision(variant: str, form: str, size: int = 96, **kw) -> None:
    """Without timm's tracer lists too (a detection codebase calling torchvision directly), odd sizes included."""
    model = _create(variant, form, **kw).eval()
    fx_model = create_feature_extractor(model, return_nodes={f"stages.{i}": str(i) for i in range(4)})
    x = _x((3, size, size))
    with torch.no_grad():
        _, inter = model.forward_intermediates(x)
        got = fx_model(x)
    for i in range(4):
        assert torch.equal(got[str(i)], inter[i])


# -- the zoo, both forms --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("check", [check_forward, check_backward, check_default_cfg, check_torchscript,
                                   check_features], ids=lambda f: f.__name__.removeprefix("check_"))
def test_zoo_keeps_the_contract(check, name, form):
    check(_variant(name), form)


@pytest.mark.parametrize(("out_indices", "levels"), [((1, 3), [1, 3]), ((-1,), [3]), (2, [2, 3]), (1, [3]),
                                                     ((0, 1, 2), [0, 1, 2]), ((-3, -1), [1, 3]), ((0, -2), [0, 2])])
def test_features_only_out_indices(out_indices, levels):
    check_features(_variant("mobilevit_xs"), "train", size=96, out_indices=out_indices, levels=levels)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("mixer", search_space.MIXERS)
def test_grad_checkpointing_backward(mixer, form):
    g = _small_genome(mixer=mixer, stem="mobileone", head="mobileone")
    check_grad_checkpointing_backward(_variant("convnext_atto"), form, genome=g)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ZOO)
def test_zoo_forward_intermediates(name, form):
    check_intermediates(_variant(name), form)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ZOO)
def test_zoo_fx(name, form):
    check_fx(_variant(name), form)


@pytest.mark.parametrize("name", ["mobilevit_xs", "fastvit_sa12", "riformer_s12"])
def test_fx_with_plain_torchvision_at_odd_sizes(name):
    check_fx_plain_torchvision(_variant(name), "deployed", size=96)


def test_timm_feature_graph_net():
    feats = timm.create_model(_variant("mobilevit_xs"), features_only=True, feature_cls="fx").eval()
    ref = _create(_variant("mobilevit_xs"), "train", features_only=True).eval()
    with torch.no_grad():
        got = feats(_x((3, 96, 96)))
    assert [o.shape[1] for o in got] == ref.feature_info.channels() == [48, 64, 80, 96]


def test_pretrained_cfg_follows_the_form():
    model = timm.create_model(_variant("fastvit_t8"))
    assert model.pretrained_cfg["first_conv"] == ("stem.0.conv_kxk.0.conv", "stem.0.conv_scale.conv")
    assert timm.models.get_pretrained_cfg(_variant("fastvit_t8")).first_conv == model.pretrained_cfg["first_conv"]
    deployed = timm.utils.reparameterize_model(model)  # timm's walker, not ours
    assert deployed.default_cfg["first_conv"] == "stem.0.reparam_conv" == deployed._traits["first_conv"]
    assert model.pretrained_cfg["first_conv"] != "stem.0.reparam_conv"  # the copy's folding left the original


@pytest.mark.parametrize("name", ["repvit_m0_9", "fastvit_t8"])  # a linear head (BN in the classifier), a MobileOne
def test_reset_classifier_keeps_the_model_dtype(name):
    """A head without a classifier has no parameters: the new classifier takes the model's dtype."""
    model = timm.create_model(_variant(name), num_classes=5).double().eval()
    x = _x((3, 64, 64)).double()
    model.reset_classifier(0)
    model.reset_classifier(10)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 10) and out.dtype == torch.float64
    assert {t.dtype for t in model.head.state_dict().values() if t.is_floating_point()} == {torch.float64}
    model.reset_classifier(0, "")
    model.reset_classifier(3, "")  # unpooled: 1x1 conv classifier (and BatchNorm2d for the linear head)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.float64


def test_reset_classifier_keeps_the_model_device():
    model = timm.create_model(_variant("repvit_m0_9"), num_classes=5).to("meta")
    model.reset_classifier(0)
    model.reset_classifier(10)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert model.head.fc.weight.shape == (10, model.num_features) and model.head.norm.weight.device.type == "meta"


@pytest.mark.parametrize(("name", "indices", "kept", "pool_size"), [
    ("convnext_atto", (0, 1), [0, 1], (28, 28)),  # 224 px, stride 8
    ("convnext_atto", 2, [2, 3], (7, 7)),
    ("fastvit_t8", (-2,), [2], (16, 16)),  # 256 px, stride 16
])
def test_prune_intermediate_layers_describes_the_pruned_model(name, indices, kept, pool_size):
    variant = _variant(name)
    model = timm.create_model(variant).eval()
    widths = [st.width for st in model.genome.stages]
    unpruned_pool_size = model.pretrained_cfg["pool_size"]
    assert model.prune_intermediate_layers(indices) == kept
    last = kept[-1]
    assert len(model.stages) == len(model.feature_info) == last + 1
    assert [i["module"] for i in model.feature_info] == [f"stages.{i}" for i in range(last + 1)]
    assert model.feature_info[-1]["num_chs"] == widths[last] == model.num_features == model.head_hidden_size
    cfg = model.pretrained_cfg
    assert cfg["pool_size"] == pool_size
    assert timm.models.get_pretrained_cfg(variant).pool_size == unpruned_pool_size  # the registry's is untouched
    x = _x(cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, widths[last], *pool_size)
        # no classifier and no pooling, as after timm's reset_classifier(0, ''): cfg['classifier'] names the Identity
        # where reset_classifier puts a new one
        assert model.num_classes == 0 and torch.equal(model(x), feats)
        assert isinstance(model.get_submodule(cfg["classifier"]), nn.Identity)
        inter = model.forward_intermediates(x, indices=kept, intermediates_only=True)
        assert [tuple(t.shape[1:]) for t in inter][-1] == (widths[last], *pool_size)
        model.reset_classifier(10, "avg")
        assert model(x).shape == (1, 10) and model.get_submodule(cfg["classifier"]) is model.get_classifier()


def test_reparameterized_backbone_keeps_features_and_pre_logits():
    """What ``reparameterize`` means for a backbone: the same stage features and pre-logits, fewer layers."""
    model = randomize_(timm.create_model(_variant("repvit_m0_9")), seed=1).eval()
    x = _x((3, 96, 96))
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        pre = model.forward_head(final, pre_logits=True)
        deployed = reparameterize(copy.deepcopy(model))
        final_d, inter_d = deployed.forward_intermediates(x)
        torch.testing.assert_close(deployed.forward_head(final_d, pre_logits=True), pre, rtol=1e-4, atol=1e-4)
    for a, b in zip(inter, inter_d):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert unfoldable_batchnorms(deployed) == []  # the linear head's BN too (it is part of the classifier)


# -- MobileViT at maps that do not divide by the patch size ---------------------------------------------------------
def _interpolations(monkeypatch) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    calls = []
    real = torch.nn.functional.interpolate

    def spy(x, size=None, **kw):
        calls.append((tuple(x.shape[-2:]), tuple(size)))
        return real(x, size=size, **kw)

    monkeypatch.setattr(torch.nn.functional, "interpolate", spy)
    return calls


@pytest.mark.parametrize(("hw", "patch", "expected"), [((6, 6), 4, (8, 8)), ((3, 5), 2, (4, 6)), ((8, 8), 4, None)])
def test_mobilevit_block_resizes_like_timm(monkeypatch, hw, patch, expected):
    block = randomize_(MobileViTBlock(16, depth=1, patch_size=patch)).eval()
    calls = _interpolations(monkeypatch)
    x = torch.randn(2, 16, *hw)
    with torch.no_grad():
        out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # timm's MobileVitBlock: up to the nearest multiple of the patch before unfolding, back after folding
    assert calls == ([] if expected is None else [(hw, expected), (expected, hw)])


def test_mobilevit_block_resize_is_the_divisible_block_on_the_resized_map():
    block = randomize_(MobileViTBlock(16, depth=1, patch_size=2)).eval()
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        y = block.conv_1x1(block.conv_kxk(x))
        up = torch.nn.functional.interpolate(y, size=(6, 6), mode="bilinear", align_corners=False)
        # the divisible path of the same block, from the resized map on
        t = up.reshape(1, -1, 3, 2, 3, 2).permute(0, 3, 5, 2, 4, 1).reshape(4, 9, -1)
        t = block.norm(block.transformer(t)).reshape(1, 2, 2, 3, 3, -1).permute(0, 5, 3, 1, 4, 2).reshape(up.shape)
        back = torch.nn.functional.interpolate(t, size=(5, 5), mode="bilinear", align_corners=False)
        ref = block.conv_fusion(torch.cat((x, block.conv_proj(back)), dim=1))
        torch.testing.assert_close(block(x), ref)


def test_deployed_mobilevit_at_its_resolution_has_no_resize(tmp_path):
    """The priced network (deployment resolution) never resizes; other sizes do, and still export."""
    import onnx

    model = reparameterize(timm.create_model(_variant("mobilevit_xs")).eval())
    ops = {}
    for res in (256, 96):
        path = export_onnx(model, tmp_path / f"m{res}.onnx", (3, res, res))
        ops[res] = {n.op_type for n in onnx.load(path).graph.node}
    assert "Resize" not in ops[256] and "Resize" in ops[96]


def test_genome_validation_stays_strict():
    with pytest.raises(search_space.InvalidGenomeError, match=r"stages\[3\]\.patch_size"):
        zoo["mobilevit_xs"].with_resolution(96)
    space = SearchSpace(resolution=96, patch_sizes=(2,))  # the stride-32 map is 3x3: no MobileViT there
    assert "mobilevit" in space.stages[2].mixers and "mobilevit" not in space.stages[3].mixers


# -- bad input: one clear error naming the argument ----------------------------------------------------------------
@pytest.mark.parametrize("out_indices", [(4,), (0, 5), (-5,), 0, 5, (1, 1), (3, 1), (), "1", (1.0,), True])
def test_bad_out_indices(out_indices):
    with pytest.raises(ModelArgumentError, match=r"^out_indices: "):
        timm.create_model(_variant("convnext_atto"), features_only=True, out_indices=out_indices)


def test_out_indices_without_features_only():
    with pytest.raises(ModelArgumentError, match=r"^out_indices: only used with features_only=True"):
        timm.create_model(_variant("convnext_atto"), out_indices=(1,))


@pytest.mark.parametrize("pool", ["foo", "AVG ", "token", 1])
def test_bad_global_pool(pool):
    with pytest.raises(ModelArgumentError, match=r"^global_pool: unknown pooling type"):
        timm.create_model(_variant("convnext_atto"), global_pool=pool)
    model = timm.create_model(_variant("convnext_atto"))
    with pytest.raises(ModelArgumentError, match=r"^global_pool: unknown pooling type"):
        model.reset_classifier(0, pool)
    assert model.head.pool_type == "avg" and model.num_classes == 1000  # nothing changed


def test_bad_intermediate_arguments():
    model = timm.create_model(_variant("convnext_atto"))
    x = _x((3, 64, 64))
    with pytest.raises(ModelArgumentError, match=r"^indices: feature index 7"):
        model.forward_intermediates(x, indices=[7])
    with pytest.raises(ModelArgumentError, match=r"^output_fmt: "):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize(("kwargs", "arg"), [({"num_classes": -1}, "num_classes"), ({"in_chans": 0}, "in_chans"),
                                             ({"drop_rate": 1.5}, "drop_rate"), ({"drop_path_rate": -0.1},
                                                                                  "drop_path_rate")])
def test_bad_model_arguments(kwargs, arg):
    with pytest.raises(ModelArgumentError, match=rf"^{arg}: "):
        timm.create_model(_variant("convnext_atto"), **kwargs)
    assert issubclass(ModelArgumentError, RepNASError) and issubclass(ModelArgumentError, ValueError)


# -- every head type, every pooling -------------------------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("head", search_space.HEADS)
@pytest.mark.parametrize("pool", ["avg", "max", "catavgmax", "fast", ""])
def test_head_shapes_for_every_pooling(head, pool, form):
    g = _small_genome(head=head)
    model = _create(_variant("convnext_atto"), form, genome=g, num_classes=5, global_pool=pool).eval()
    x = _x((3, 64, 64), batch=2)
    with torch.no_grad():
        feats = model.forward_features(x)
        out, pre = model(x), model.forward_head(feats, pre_logits=True)
    mult = 2 if "cat" in pool else 1
    assert model.head_hidden_size == mult * model.num_features
    if pool:
        assert out.shape == (2, 5) and pre.shape == (2, model.head_hidden_size)
    else:  # unpooled: per-position logits (1x1 conv classifier), pre-logits are the map
        assert out.shape == (2, 5, 2, 2) and pre.shape == feats.shape


def _small_genome(head="linear", stem="repvit", mixer="repdw", resolution=64):
    """Four one-block stages, ``mixer`` in every stage from 1 (or the first that allows it) on."""
    first = max(1, MIXER_MIN_STAGE[mixer])
    return search_space.Genome(
        stages=tuple(search_space.StageGenome(depth=1, width=w, mixer=mixer if i >= first else "repdw",
                                              downsample="none" if i == 0 else "metaformer")
                     for i, w in enumerate((16, 24, 32, 40))),
        stem=stem, head=head, resolution=resolution)


def test_genome_entrypoint_cfg_describes_the_genome():
    g = _small_genome(stem="mobileone", resolution=96)
    model = timm.create_model(_variant("convnext_atto"), genome=g)
    assert model.pretrained_cfg["input_size"] == (3, 96, 96) and model.pretrained_cfg["pool_size"] == (3, 3)
    assert model.pretrained_cfg["first_conv"] == ("stem.0.conv_kxk.0.conv", "stem.0.conv_scale.conv")
    # the caller's overlay still wins
    model = timm.create_model(_variant("convnext_atto"), genome=g, pretrained_cfg_overlay=dict(crop_pct=0.5))
    assert model.pretrained_cfg["crop_pct"] == 0.5 and model.pretrained_cfg["input_size"] == (3, 96, 96)


# -- random genomes (hypothesis) -----------------------------------------------------------------------------------
_SPACE = SearchSpace(resolution=64, widths=((16, 24), (24, 32), (32, 48), (48, 64)), depths=((1, 2),) * 4,
                     patch_sizes=(1, 2, 4))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), form=st.sampled_from(FORMS), size=st.sampled_from([64, 80, 96]),
       levels=st.sets(st.integers(0, 3), min_size=1), negative=st.booleans())
def test_random_genomes_keep_the_contract(seed, form, size, levels, negative):
    genome = _SPACE.sample(np.random.default_rng(seed))
    kw = dict(genome=genome, seed=seed % 1000)
    variant = _variant("repvit_m0_9")
    check_forward(variant, form, **kw)
    check_backward(variant, form, **kw)
    check_default_cfg(variant, form, **kw)
    check_torchscript(variant, form, **kw)
    levels = sorted(levels)  # given as absolute indices, or the same levels counted from the end
    check_features(variant, form, size=size, out_indices=tuple(i - 4 if negative else i for i in levels),
                   levels=levels, **kw)
    check_intermediates(variant, form, size=size, **kw)
    check_fx(variant, form, **kw)
    check_fx_plain_torchvision(variant, form, size=size, **kw)
    check_grad_checkpointing_backward(variant, form, **kw)


# -- a folder registered with register_dir ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    from timm.models import save_for_hf

    d = tmp_path_factory.mktemp("exported")
    genome = _small_genome(stem="mobileone", mixer="mobilevit", head="mobileone", resolution=64)
    cfg = default_cfg_for(genome, num_classes=10, mean=(0.3, 0.3, 0.3), std=(0.2, 0.2, 0.2))
    model = search_space.create_repnas("repnas_contract_dir", genome, num_classes=10, pretrained_cfg=cfg)
    save_for_hf(model, str(d), model_args={"genome": genome.to_dict()}, safe_serialization=True)
    config = json.loads((d / "config.json").read_text())
    config["pretrained_cfg"]["first_conv"] = "stem"  # as folders exported before this fix had it
    (d / "config.json").write_text(json.dumps(config))
    return search_space.register_dir(d)


@pytest.mark.parametrize("form", FORMS)
def test_registered_folder_keeps_the_contract(registered, form):
    kw = dict(pretrained=True)
    check_default_cfg(registered, form, **kw)
    model = _create(registered, form, **kw)
    assert model.pretrained_cfg["mean"] == (0.3, 0.3, 0.3) and model.num_classes == 10
    check_forward(registered, form, **kw)
    check_backward(registered, form, **kw)
    check_torchscript(registered, form, **kw)
    check_features(registered, form, size=96, out_indices=(1, 2, 3), levels=[1, 2, 3], **kw)  # 96: 3x3, patch 2
    check_intermediates(registered, form, **kw)
    check_fx(registered, form, **kw)


@pytest.fixture(scope="module")
def registered_linear(tmp_path_factory):
    """A folder with a ``linear`` head (its BN belongs to the classifier) and trained-looking BN statistics."""
    from timm.models import save_for_hf

    d = tmp_path_factory.mktemp("exported_linear")
    genome = _small_genome(stem="repvit", mixer="repmixer", head="linear", resolution=64)
    cfg = default_cfg_for(genome, num_classes=10)
    torch.manual_seed(3)
    model = search_space.create_repnas("repnas_contract_linear_dir", genome, num_classes=10, pretrained_cfg=cfg)
    randomize_(model, seed=3).eval()
    assert any(k.startswith("head.norm.") for k in model.state_dict())
    save_for_hf(model, str(d), model_args={"genome": genome.to_dict()}, safe_serialization=True)
    return search_space.register_dir(d), model


@pytest.mark.parametrize("form", FORMS)
def test_registered_linear_head_folder_as_a_backbone(registered_linear, form):
    """Loaded without its classifier (so without the head's BN), unpooled, and as a feature extractor."""
    name, saved = registered_linear
    x = _x((3, 64, 64), batch=2, seed=5)
    with torch.no_grad():
        ref_map, ref_inter = saved.forward_intermediates(x)
        ref_logits = saved(x)
    tol = dict(rtol=1e-4, atol=1e-4) if form == "deployed" else dict(rtol=0, atol=0)

    def load(**kwargs) -> nn.Module:
        m = timm.create_model(name, pretrained=True, **kwargs).eval()
        return reparameterize(m) if form == "deployed" else m  # folds the loaded statistics

    whole = load()  # the classifier too, BN included
    with torch.no_grad():
        torch.testing.assert_close(whole(x), ref_logits, **tol)

    backbone = load(num_classes=0, global_pool="")
    sd = backbone.state_dict()
    assert backbone.num_classes == 0 and not any(k.startswith(("head.norm.", "head.fc.")) for k in sd)
    if form == "train":  # every weight the backbone has is the folder's
        saved_sd = saved.state_dict()
        assert all(torch.equal(v, saved_sd[k]) for k, v in sd.items())
    with torch.no_grad():
        out = backbone(x)
    assert out.shape == ref_map.shape and out.shape[1] == backbone.num_features
    torch.testing.assert_close(out, ref_map, **tol)

    feats = load(features_only=True)
    assert feats.feature_info.channels() == [16, 24, 32, 40]
    with torch.no_grad():
        outs = feats(x)
    assert len(outs) == 4
    for o, r in zip(outs, ref_inter):
        torch.testing.assert_close(o, r, **tol)
