"""Calibration of a cost model on published latencies: per-source scales, ridge-shrunk block terms, the per-family
validation, the goals and the block-mix resemblance that labels a new network (latency_lut._calibration)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from latency_lut._calibration import (
    COMPOSITION,
    GOALS,
    CalibrationRow,
    Candidate,
    composition,
    family_profiles,
    fit_calibration,
    goal_check,
    leave_one_family_out,
    nested_leave_one_family_out,
    resemblance,
)
from latency_lut._costmodel import CostModel, CostModelError, fit
from latency_lut._features import BLOCK_FEATURES, graph_features

TRUTH = {"x": 0.02, "z": 0.5}


def _rows(scales: dict[str, float], *, seed: int = 0) -> list[CalibrationRow]:
    """Four families, each reported by two of three sources that publish at their own scale of the truth."""
    rng = np.random.default_rng(seed)
    sources = list(scales)
    rows = []
    for f, fam in enumerate(("F1", "F2", "F3", "F4")):
        for i in range(5):
            x, z = rng.uniform(5, 100), rng.uniform(0.5, 5)
            ms = 0.3 + TRUTH["x"] * x + TRUTH["z"] * z
            for src in (sources[f % 3], sources[(f + 1) % 3]):
                rows.append(CalibrationRow(f"{fam}-{i}", f"{fam}{i}", fam, {"x": x, "z": z}, ms * scales[src],
                                           source=src))
    return rows


class TestSourceScales:
    def test_joint_fit_recovers_the_law_and_the_scales(self):
        scales = {"paper-a": 1.0, "paper-b": 2.0, "paper-c": 0.8}
        rows = _rows(scales)
        model, fitted = fit_calibration(rows, ("x", "z"), source_prior=0.0, scale_iterations=50)
        # scales are identified up to one common factor: their ratios are exact
        assert fitted["paper-b"] / fitted["paper-a"] == pytest.approx(2.0, rel=1e-3)
        assert fitted["paper-c"] / fitted["paper-a"] == pytest.approx(0.8, rel=1e-3)
        # the centred scales have a row-weighted geometric mean of 1
        assert sum(math.log(fitted[r.source]) for r in rows) == pytest.approx(0.0, abs=1e-6)
        c = fitted["paper-a"]
        assert model.coefficients[0] * c == pytest.approx(TRUTH["x"], rel=1e-3)
        assert model.intercept_ms * c == pytest.approx(0.3, rel=1e-2)

    def test_scales_remove_the_offset_from_the_validation(self):
        rows = _rows({"paper-a": 1.0, "paper-b": 2.0, "paper-c": 0.8})
        plain = leave_one_family_out(rows, feature_names=("x", "z"))
        scaled = leave_one_family_out(rows, feature_names=("x", "z"), source_prior=0.0, scale_iterations=50)
        assert scaled["overall_median_ape_pct"] < 0.5 < plain["overall_median_ape_pct"]
        assert all(f["median_ape_pct"] < 0.5 and abs(f["bias_pct"]) < 0.5 for f in scaled["families"])
        # at scale 1 the offsets between papers remain in the error
        assert max(f["consensus_median_ape_pct"] for f in scaled["families"]) > 10

    def test_the_prior_pulls_a_lonely_source_to_one(self):
        rows = _rows({"paper-a": 1.0, "paper-b": 1.0, "paper-c": 1.0})
        lonely = CalibrationRow("odd", "odd", "F1", {"x": 50.0, "z": 1.0}, 5.0 * (0.3 + 1.0 + 0.5), source="blog")
        _, weak = fit_calibration([*rows, lonely], ("x", "z"), source_prior=0.0, scale_iterations=30)
        _, strong = fit_calibration([*rows, lonely], ("x", "z"), source_prior=20.0, scale_iterations=30)
        assert weak["blog"] == pytest.approx(5.0, rel=0.05)
        assert 1.0 < strong["blog"] < 1.2

    def test_no_prior_means_no_scales(self):
        rows = _rows({"paper-a": 1.0, "paper-b": 2.0, "paper-c": 0.8})
        model, scales = fit_calibration(rows, ("x", "z"))
        assert set(scales.values()) == {1.0}
        ref = fit([r.features for r in rows], [r.latency_ms for r in rows], feature_names=("x", "z"))
        assert model.coefficients == pytest.approx(ref.coefficients)
        with pytest.raises(CostModelError, match="no calibration rows"):
            fit_calibration([], ("x",))


class TestRidge:
    def test_ridge_shrinks_a_term_few_rows_support(self):
        rng = np.random.default_rng(3)
        rows = [{"x": float(x), "b": 0.0} for x in rng.uniform(1, 100, 30)]
        rows[0]["b"] = 1.0  # one row exercises b, and it is slower than the law by 2 ms
        lat = [0.1 + 0.02 * r["x"] + 2.0 * r["b"] for r in rows]
        free = fit(rows, lat, feature_names=("x", "b"))
        shrunk = fit(rows, lat, feature_names=("x", "b"), ridge={"b": 16.0})
        assert free.coefficients[1] == pytest.approx(2.0, rel=1e-3)
        assert 0 <= shrunk.coefficients[1] < 0.5 * free.coefficients[1]
        with pytest.raises(CostModelError, match="not one of the features"):
            fit(rows, lat, feature_names=("x",), ridge={"b": 1.0})
        with pytest.raises(CostModelError, match="non-negative"):
            fit(rows, lat, feature_names=("x", "b"), ridge={"b": -1.0})

    def test_ridge_leaves_a_well_supported_term_alone(self):
        rng = np.random.default_rng(4)
        rows = [{"x": float(x), "b": float(b)} for x, b in rng.uniform(1, 100, (40, 2))]
        lat = [0.1 + 0.02 * r["x"] + 0.05 * r["b"] for r in rows]
        m = fit(rows, lat, feature_names=("x", "b"), ridge={"b": 0.01}, loss="l1")
        assert m.coefficients == pytest.approx([0.02, 0.05], rel=0.02)


class TestValidation:
    def test_nested_lofo_has_medians_bias_and_chosen(self):
        rows = _rows({"paper-a": 1.0, "paper-b": 1.3, "paper-c": 0.9})
        cands = [Candidate("x-only", ("x",), {"source_prior": 2.0}), Candidate("xz", ("x", "z"), {"source_prior": 2.0})]
        nested = nested_leave_one_family_out(rows, cands)
        assert [f["chosen"] for f in nested["families"]] == ["xz"] * 4
        for f in nested["families"]:
            assert {"median_ape_pct", "bias_pct", "consensus_median_ape_pct", "n_models"} <= set(f)
            assert f["median_ape_pct"] < 5
        assert nested["overall_spearman"] > 0.95

    def test_bias_sign_and_goal_check(self):
        rows = [CalibrationRow(f"M{i}", f"m{i}", fam, {"x": float(i + 1)}, float(i + 1), source="s")
                for fam, rng_ in (("A", range(0, 3)), ("B", range(3, 6)), ("C", range(6, 7))) for i in rng_]
        table = {"families": [], "overall_spearman": 0.95}
        for fam, factor in (("A", 1.05), ("B", 1.5), ("C", 3.0)):
            from latency_lut._calibration import evaluate

            m = CostModel(("x",), (factor,))
            table["families"].append({"family": fam, **evaluate(m, [r for r in rows if r.family == fam])})
        by = {f["family"]: f for f in table["families"]}
        assert by["B"]["bias_pct"] == pytest.approx(50.0) and by["B"]["median_ape_pct"] == pytest.approx(50.0)
        g = goal_check(table)
        assert g["families"]["A"]["meets"] is True and g["families"]["B"]["meets"] is False
        assert g["families"]["C"]["meets"] is None  # one model: reported, not judged
        assert g["spearman_meets"] and not g["all_met"]
        assert GOALS["median_ape_pct"] == 15.0


def _net(act: nn.Module, norm: str = "bn", k: int = 3, se: bool = False) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), act, nn.Conv2d(16, 16, k, padding=k // 2, groups=16)]
    if norm == "ln":
        layers.append(nn.GroupNorm(1, 16))
    layers += [nn.Conv2d(16, 32, 1), act]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*layers)
            self.fc = nn.Conv2d(32, 32, 1)

        def forward(self, x):
            x = self.body(x)
            if se:
                x = x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
            return x.mean((2, 3))

    return Net().eval()


class TestBlockFeatures:
    @pytest.mark.parametrize("act, kind", [(nn.GELU(), "gelu"), (nn.SiLU(), "silu"), (nn.Hardswish(), "hardswish")])
    def test_activation_kind_is_counted_through_fusion(self, act, kind):
        f = graph_features(_net(act), (3, 16, 16))
        elems = 16 * 16 * 16 + 32 * 16 * 16  # both activation outputs
        assert f[f"act_{kind}.elems"] == pytest.approx(elems)
        assert all(f[f"act_{o}.elems"] == 0 for o in ("gelu", "silu", "hardswish") if o != kind)
        assert f["act_gelu.elems"] + f["act_silu.elems"] + f["act_hardswish.elems"] == elems
        relu = graph_features(_net(nn.ReLU()), (3, 16, 16))
        assert all(relu[f"act_{o}.elems"] == 0 for o in ("gelu", "silu", "hardswish"))  # ReLU is free

    @pytest.mark.parametrize("k", [3, 5, 7])
    def test_depthwise_kernels_and_norms(self, k):
        f = graph_features(_net(nn.ReLU(), norm="ln", k=k), (3, 16, 16))
        macs = 16 * 16 * 16 * k * k
        assert f["conv_depthwise.macs"] == macs
        # cumulative: a k x k kernel counts for every size up to k (so its price per MAC is never below a smaller one's)
        assert [f[f"dw{d}.macs"] for d in (3, 5, 7)] == [macs if d <= k else 0 for d in (3, 5, 7)]
        assert f["layernorm.bytes"] > 0 and f["batchnorm.bytes"] == 0

    def test_squeeze_excite_is_a_global_pool_and_a_sigmoid_gate(self):
        plain = graph_features(_net(nn.ReLU()), (3, 16, 16))
        se = graph_features(_net(nn.ReLU(), se=True), (3, 16, 16))
        assert plain["globalpool.ops"] == 1 and se["globalpool.ops"] == 2  # the head's and the gate's
        assert se["act_sigmoid.elems"] == 32 and plain["act_sigmoid.elems"] == 0
        assert set(BLOCK_FEATURES) <= set(se)


class TestResemblance:
    def _rows(self):
        rows = []
        for fam, act in (("GeluNets", nn.GELU()), ("SiluNets", nn.SiLU())):
            for i, k in enumerate((3, 5, 7)):
                f = graph_features(_net(act, k=k), (3, 16 + 8 * i, 16 + 8 * i))
                rows.append(CalibrationRow(f"{fam}{i}", f"{fam}{i}", fam, f, 1.0))
        return rows

    def test_a_network_resembles_its_own_kind(self):
        profiles = family_profiles(self._rows())
        assert profiles["ratios"] == [f"{p}/{w}" for p, w in COMPOSITION]
        gelu = graph_features(_net(nn.GELU(), k=5), (3, 20, 20))
        silu = graph_features(_net(nn.SiLU(), k=3), (3, 20, 20))
        assert resemblance(gelu, profiles)[0] == "GeluNets"
        assert resemblance(silu, profiles)[0] == "SiluNets"
        assert composition(gelu).shape == (len(COMPOSITION),)

    def test_an_unlike_network_resembles_none(self):
        profiles = family_profiles(self._rows())
        attn = nn.MultiheadAttention(16, 2, batch_first=True)

        class Tokens(nn.Module):
            def forward(self, x):
                t = x.flatten(2).transpose(1, 2).repeat(1, 1, 6)[..., :16]
                return attn(t, t, t, need_weights=False)[0].mean(1)

        f = graph_features(Tokens().eval(), (3, 8, 8))
        fam, dist = resemblance(f, profiles)
        assert fam is None and dist > 0
        assert resemblance(f, {})[0] is None


class TestShippedModel:
    """The shipped iphone12 calibration records what the labels need, and labels the zoo by its own families."""

    def test_provenance_has_goals_effects_scales_profiles(self):
        import latency_lut

        prov = latency_lut.load_iphone12_cost_model().provenance
        assert prov["lofo_kind"] == "nested"
        assert set(prov["goals"]["families"]) == {f["family"] for f in prov["lofo"]["families"]}
        assert set(prov["block_effects"]) == set(latency_lut._iphone12.BLOCK_TERMS)
        assert all(e["models_with_it"] > 0 for e in prov["block_effects"].values())  # every term is exercised
        assert prov["source_scales"] and all(s > 0 for s in prov["source_scales"].values())
        assert set(prov["family_profiles"]["families"]) == {f["family"] for f in prov["lofo"]["families"]}

    @pytest.mark.parametrize("name, family", [("repvit_m0_9", "RepViT"), ("fastvit_t8", "FastViT"),
                                              ("mobilevit_xs", "MobileViT")])
    def test_zoo_networks_resemble_their_families(self, name, family):
        import search_space
        from latency_lut import get_device

        g = search_space.zoo[name]
        text = get_device("iphone12").figure_error(search_space.build_model(g), (3, g.resolution, g.resolution))
        assert text.startswith(f"like {family}:") and "% median error" in text

    def test_measured_devices_add_nothing(self):
        from latency_lut import get_device

        assert get_device("ort-cpu").figure_error(nn.Conv2d(3, 8, 3), (3, 16, 16)) is None
