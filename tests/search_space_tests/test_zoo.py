"""The seed zoo against timm: deployed parameter counts, native resolution, ONNX of the deployed form."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.utils import reparameterize_model

import search_space
from search_space import ZOO_REFERENCES, build_model, reparameterize, zoo
from search_space._export import export_onnx, onnx_forward
from search_space.testing import randomize_, rel_error, unfoldable_batchnorms

REQUIRED = {"repvit_m0_9", "repvit_m1_1", "fastvit_t8", "fastvit_sa12", "mobilevit_xs", "riformer_s12",
            "convnext_atto"}


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_zoo_has_the_seed_models():
    assert REQUIRED <= set(zoo)


@pytest.mark.parametrize("name", sorted(zoo))
def test_deployed_param_count_matches_timm(name):
    ref = reparameterize_model(timm.create_model(ZOO_REFERENCES[name], pretrained=False).eval())
    ours = reparameterize(build_model(zoo[name]).eval())
    n_ref, n_ours = _params(ref), _params(ours)
    assert abs(n_ours - n_ref) / n_ref <= 0.03, (name, n_ours, n_ref)
    assert ref.pretrained_cfg["input_size"][-1] == zoo[name].resolution


@pytest.mark.parametrize("name", sorted(zoo))
def test_zoo_runs_folds_and_exports(name, tmp_path):
    g = zoo[name]
    model = randomize_(timm.create_model(f"repnas_{name}"), seed=3).eval()
    x = torch.randn(1, 3, g.resolution, g.resolution)
    with torch.no_grad():
        before = model(x)
        deployed = reparameterize(copy.deepcopy(model))
        after = deployed(x)
    assert before.shape == (1, 1000)
    assert rel_error(before, after) <= 1e-4
    assert unfoldable_batchnorms(deployed) == []
    path = export_onnx(deployed, tmp_path / f"{name}.onnx", (3, g.resolution, g.resolution))
    torch.testing.assert_close(torch.from_numpy(onnx_forward(path, x)), after, atol=1e-4, rtol=1e-4)


def test_timm_entrypoints_registered():
    names = set(timm.list_models("repnas_*"))
    assert {f"repnas_{n}" for n in zoo} <= names
    m = timm.create_model("repnas_fastvit_t8", num_classes=10)
    assert isinstance(m, search_space.RepNASNet) and m.num_classes == 10
    assert m.pretrained_cfg["input_size"] == (3, 256, 256)
    f = timm.create_model("repnas_convnext_atto", features_only=True)
    outs = f(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [40, 80, 160, 320]
