"""Tests of the predicted iphone12 device: graph features, the cost model, and the shipped calibration."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import latency_lut
import search_space
from latency_lut._calibration import (
    CalibrationRow,
    Candidate,
    evaluate,
    leave_one_family_out,
    nested_leave_one_family_out,
    select_candidate,
)
from latency_lut._costmodel import FORMAT_VERSION, CostModel, CostModelError, feature_value, fit
from latency_lut._features import (
    BLOCK_FEATURES,
    OP_CLASSES,
    QUANTITIES,
    SPILL_THRESHOLDS,
    classify_node,
    graph_features,
)
from latency_lut._iphone12 import (
    CANDIDATES,
    MAC_FLOOR_MS,
    MACS_FEATURE,
    _parse_resolution,
    calibration_summary,
    default_costmodel_path,
    default_csv_path,
    family_of,
    load_cost_model,
    predict_module_ms,
    unit_cost_ms,
)
from latency_lut._signatures import build_unit


def _tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # dense 3x3
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
        nn.Conv2d(8, 16, 1),  # pointwise
        nn.Conv2d(16, 16, 3, padding=1, groups=4),  # grouped
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


@pytest.fixture(scope="module")
def repvit_features() -> dict[str, float]:
    torch.manual_seed(0)
    return graph_features(search_space.build_model(search_space.zoo["repvit_m0_9"]), (3, 224, 224))


class TestGraphFeatures:
    def test_classes_and_exact_macs(self):
        f = graph_features(_tiny(), (3, 16, 16))
        hw = 16 * 16
        assert f["conv_dense.macs"] == 8 * hw * 3 * 9
        assert f["conv_depthwise.macs"] == 8 * hw * 9
        assert f["conv_pointwise.macs"] == 16 * hw * 8
        assert f["conv_grouped.macs"] == 16 * hw * 4 * 9
        assert f["matmul.macs"] == 16 * 10
        for cls in ("conv_dense", "conv_depthwise", "conv_pointwise", "conv_grouped", "matmul"):
            assert f[f"{cls}.ops"] == 1
        assert f["norm.ops"] == 0  # BatchNorm is folded into the convolution before pricing
        assert f["conv_depthwise.weight_bytes"] == 2 * (8 * 9 + 8)  # fp16 weight + bias
        assert f["total.macs"] == pytest.approx(sum(f[f"{c}.macs"] for c in OP_CLASSES))

    def test_deterministic_and_leaves_module_alone(self):
        m = _tiny().train()
        before = {k: v.clone() for k, v in m.state_dict().items()}
        a = graph_features(m, (3, 16, 16))
        b = graph_features(m, (3, 16, 16))
        assert a == b
        assert list(a) == ([f"{c}.{q}" for c in OP_CLASSES for q in QUANTITIES] + [f"total.{q}" for q in QUANTITIES]
                           + list(BLOCK_FEATURES))
        assert m.training and isinstance(m[1], nn.BatchNorm2d)
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())

    def test_zoo_model_positive_totals(self, repvit_features):
        f = repvit_features
        for q in ("macs", "bytes", "weight_bytes", "ops", "spill128k"):
            assert f[f"total.{q}"] > 0
        spills = [f[f"total.{q}"] for q in SPILL_THRESHOLDS]
        assert spills == sorted(spills, reverse=True)  # a higher threshold leaves fewer bytes over it
        assert 0.6e9 < f["total.macs"] < 1.1e9  # RepViT-M0.9 is published at 0.8 GMACs
        assert f["conv_depthwise.macs"] > 0 and f["conv_pointwise.macs"] > f["conv_depthwise.macs"]
        assert all(math.isfinite(v) and v >= 0 for v in f.values())

    def test_elementwise_chains_are_fused(self):
        class Res(nn.Module):
            def __init__(self):
                super().__init__()
                self.pw = nn.Conv2d(8, 16, 1)
                self.act = nn.GELU()  # exported as Div/Erf/Add/Mul/Mul
                self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
                self.scale = nn.Parameter(torch.full((1, 16, 1, 1), 0.5))
                self.proj = nn.Conv2d(16, 8, 1)

            def forward(self, x):
                return x + self.proj(self.dw(self.act(self.pw(x))) * self.scale)

        raw = graph_features(Res(), (8, 16, 16), fuse=False)
        fused = graph_features(Res(), (8, 16, 16))
        assert raw["activation.ops"] == 1 and raw["elementwise.ops"] == 6  # Erf; Div/Add/Mul/Mul, scale, residual
        assert fused["activation.ops"] == 0  # GELU folded into the 1x1 conv, the scale into the depthwise conv
        assert fused["elementwise.ops"] == 1  # the residual add reads two tensors: a layer of its own
        assert fused["elementwise.bytes"] == 2 * 3 * 8 * 16 * 16
        convs = [c for c in OP_CLASSES if c.startswith("conv")]
        assert sum(fused[f"{c}.macs"] for c in convs) == sum(raw[f"{c}.macs"] for c in convs)
        # every constant (layer scale, GELU's scalars) now belongs to the convolution it was folded into
        conv_weights = sum(fused[f"{c}.weight_bytes"] for c in convs)
        assert conv_weights == fused["total.weight_bytes"] == raw["total.weight_bytes"]

        lone = graph_features(nn.GELU(), (4, 8, 8))  # no producer to fold into: one layer
        assert lone["activation.ops"] == 1 and lone["total.ops"] == 1
        assert lone["activation.bytes"] == 2 * 2 * 4 * 8 * 8

    def test_spill_bytes_exact(self):
        f = graph_features(nn.Conv2d(4, 4, 1), (4, 256, 256))  # input and output: 512 KiB each in fp16
        kib = 1024
        assert f["conv_pointwise.spill128k"] == 2 * (512 - 128) * kib
        assert f["conv_pointwise.spill256k"] == 2 * (512 - 256) * kib
        assert f["conv_pointwise.spill512k"] == f["conv_pointwise.spill1m"] == f["conv_pointwise.spill2m"] == 0

    def test_classify_node(self):
        assert classify_node("Conv", group=32, in_channels=32, kernel=9) == "conv_depthwise"
        assert classify_node("Conv", group=4, in_channels=32, kernel=9) == "conv_grouped"
        assert classify_node("Conv", kernel=1) == "conv_pointwise"
        assert classify_node("MatMul", dynamic=True) == "matmul_dynamic"
        assert classify_node("Gemm") == "matmul"
        assert classify_node("LayerNormalization") == "norm"
        assert classify_node("Erf") == "activation"
        assert classify_node("Transpose") == "data_movement"
        assert classify_node("GlobalAveragePool") == "pool"

    def test_unexportable_module_is_a_clear_error(self):
        class Broken(nn.Module):
            def forward(self, x):
                raise RuntimeError("no forward for you")

        with pytest.raises(CostModelError, match="ONNX export failed") as ei:
            graph_features(Broken(), (3, 8, 8))
        assert isinstance(ei.value, search_space.RepNASError)
        with pytest.raises(CostModelError, match="input_size"):
            graph_features(_tiny(), (3, 0, 8))


class TestCostModel:
    def _model(self) -> CostModel:
        return CostModel(("a", "b+c"), (1.0 / 3.0, 2.5e-9), 0.1, {"note": "x", "nan": float("nan")})

    def test_json_round_trip_exact(self):
        m = self._model()
        text = m.to_json()
        back = CostModel.from_json(text)
        assert back == m
        assert back.coefficients == m.coefficients and back.intercept_ms == m.intercept_ms
        assert back.to_json() == text
        assert json.loads(text)["format_version"] == FORMAT_VERSION
        assert back.provenance["nan"] is None  # NaN is written as null: the file is plain JSON

    @pytest.mark.parametrize(
        "text, match",
        [
            ("not json", "not valid JSON"),
            ("[]", "must be an object"),
            ('{"format_version": 999, "features": [], "intercept_ms": 0}', "format_version"),
            ('{"features": [], "intercept_ms": 0}', "format_version"),
            (json.dumps({"format_version": FORMAT_VERSION, "intercept_ms": 0}), "malformed"),
            (json.dumps({"format_version": FORMAT_VERSION, "features": [{"name": "a"}], "intercept_ms": 0}),
             "malformed"),
            (json.dumps({"format_version": FORMAT_VERSION, "features": [{"name": "a", "coefficient": -1}],
                         "intercept_ms": 0}), "non-negative"),
            (json.dumps({"format_version": FORMAT_VERSION, "features": [{"name": "a", "coefficient": "1"}],
                         "intercept_ms": 0}), "numeric"),
        ],
    )
    def test_rejects_malformed_json(self, text, match):
        with pytest.raises(CostModelError, match=match):
            CostModel.from_json(text)

    def test_predict_and_missing_feature(self):
        m = self._model()
        assert m.predict({"a": 3.0, "b": 1e9, "c": 1e9}) == pytest.approx(0.1 + 1.0 + 5.0)
        assert sum(m.contributions({"a": 3.0, "b": 1e9, "c": 1e9}).values()) == pytest.approx(6.1)
        assert feature_value({"b": 1.0, "c": 2.0}, "b+c") == 3.0
        with pytest.raises(CostModelError, match="'c'"):
            m.predict({"a": 1.0, "b": 1.0})

    def test_fit_recovers_known_nonnegative_law(self):
        rng = np.random.default_rng(0)
        rows = [{"x": float(x), "y": float(y), "z": float(z)} for x, y, z in rng.uniform(1, 100, size=(40, 3))]
        truth = {"x": 0.02, "y": 0.0, "z": 0.5}
        lat = [0.3 + sum(truth[k] * r[k] for k in truth) for r in rows]
        for loss in ("l2", "l1"):
            m = fit(rows, lat, feature_names=["x", "y", "z"], loss=loss)
            assert all(c >= 0 for c in m.coefficients)
            assert m.coefficients == pytest.approx([0.02, 0.0, 0.5], abs=1e-6)
            assert m.intercept_ms == pytest.approx(0.3, abs=1e-5)

    def test_fit_never_goes_negative(self):
        rng = np.random.default_rng(1)
        rows = [{"x": float(x), "y": float(y)} for x, y in rng.uniform(1, 10, size=(30, 2))]
        lat = [max(0.1, 2.0 * r["x"] - 0.5 * r["y"]) for r in rows]  # y has a negative effect
        m = fit(rows, lat, feature_names=["x", "y"])
        assert all(c >= 0 for c in m.coefficients) and m.intercept_ms >= 0
        with pytest.raises(CostModelError, match="positive"):
            fit(rows, [-1.0] * len(rows), feature_names=["x"])
        with pytest.raises(CostModelError, match="non-negative"):
            CostModel(("x",), (-1.0,))

    def test_fit_respects_lower_bounds(self):
        rng = np.random.default_rng(2)
        rows = [{"x": float(x), "y": float(y)} for x, y in rng.uniform(1, 10, size=(30, 2))]
        lat = [0.2 + 0.1 * r["x"] + 0.3 * r["y"] for r in rows]
        m = fit(rows, lat, feature_names=["x", "y"], min_coefficients={"x": 0.05})  # bound below the truth
        assert m.coefficients == pytest.approx([0.1, 0.3], abs=1e-6)
        for loss in ("l2", "l1"):
            m = fit(rows, lat, feature_names=["x", "y"], min_coefficients={"x": 0.2}, loss=loss)
            assert m.coefficients[0] == pytest.approx(0.2) and m.coefficients[1] >= 0 and m.intercept_ms >= 0
        with pytest.raises(CostModelError, match="not one of the features"):
            fit(rows, lat, feature_names=["x"], min_coefficients={"z": 1.0})
        with pytest.raises(CostModelError, match="non-negative"):
            fit(rows, lat, feature_names=["x"], min_coefficients={"x": -1.0})

    def test_best_quality_scoring(self):
        rows = [CalibrationRow("M", "m", "F", {"x": 1.0}, 1.0, quality="B"),
                CalibrationRow("M", "m", "F", {"x": 1.0}, 2.0, quality="A-")]
        ev = evaluate(CostModel(("x",), (1.0,)), rows)
        assert ev["mape_pct"] == pytest.approx(25.0)  # |1-1|/1 and |1-2|/2, averaged
        assert ev["mape_best_quality_pct"] == pytest.approx(50.0)  # only the A- row counts
        assert [r["quality"] for r in ev["models"]["m"]["rows"]] == ["B", "A-"]

    def test_selection_and_nested_lofo(self):
        rows = []
        for fam, n in (("F1", 4), ("F2", 3), ("F3", 3), ("F4", 2)):
            for i in range(n):
                x, z = float(10 * (i + 1) + len(fam) + n), float((7 * i + 3 * n) % 5 + 1)
                rows.append(CalibrationRow(f"{fam}-{i}", f"{fam}{i}", fam, {"x": x, "z": z}, 0.2 + 0.1 * x))
        cands = [Candidate("z", ("z",)), Candidate("x", ("x",), {"loss": "l1"})]
        idx, scores = select_candidate(rows, cands)
        assert idx == 1 and scores[1] == pytest.approx(0.0, abs=1e-6) and scores[0] > 1.0
        nested = nested_leave_one_family_out(rows, cands)
        assert [f["chosen"] for f in nested["families"]] == ["x"] * 4
        assert nested["mean_mape_pct"] == pytest.approx(0.0, abs=1e-6)
        with pytest.raises(CostModelError, match="three families"):
            nested_leave_one_family_out([r for r in rows if r.family in ("F1", "F2")], cands)

    def test_leave_one_family_out_table(self):
        rows = []
        for fam, n in (("F1", 4), ("F2", 3), ("F3", 2)):
            for i in range(n):
                x = float(10 * (i + 1) + len(fam))
                rows.append(CalibrationRow(f"{fam}-{i}", f"{fam}{i}", fam, {"x": x}, 0.2 + 0.1 * x))
        table = leave_one_family_out(rows, feature_names=["x"])
        assert [f["family"] for f in table["families"]] == ["F1", "F2", "F3"]
        assert table["mean_mape_pct"] == pytest.approx(0.0, abs=1e-6)
        by = {f["family"]: f for f in table["families"]}
        assert by["F1"]["spearman"] == pytest.approx(1.0) and math.isnan(by["F3"]["spearman"])
        assert evaluate(fit([r.features for r in rows], [r.latency_ms for r in rows], feature_names=["x"]),
                        rows)["n_models"] == 9


class TestShippedIphone12:
    def test_shipped_files_exist(self):
        assert default_csv_path().is_file() and default_costmodel_path().is_file()

    def test_shipped_model_loads_and_is_nonnegative(self):
        m = load_cost_model()
        assert m.feature_names and all(c >= 0 for c in m.coefficients) and m.intercept_ms >= 0
        prov = m.provenance
        assert prov["csv"]["sha256"] and prov["versions"]["timm"] and prov["rows_used"]

    def test_predicts_repvit_m0_9_close_to_published(self, repvit_features):
        ms = load_cost_model().predict(repvit_features)
        assert math.isfinite(ms) and ms > 0
        assert abs(ms - 0.9) / 0.9 < 0.35  # published 0.9 ms (in the calibration set)

    def test_predict_module_ms(self):
        ms = predict_module_ms(_tiny(), (3, 32, 32))
        assert math.isfinite(ms) and ms > 0

    def test_lofo_table_has_every_family(self):
        prov = load_cost_model().provenance
        families = {r["family"] for r in prov["rows_used"]}
        assert {f["family"] for f in prov["lofo"]["families"]} == families
        assert {f["family"] for f in prov["lofo_unnested"]["families"]} == families
        assert {"RepViT", "FastViT", "MobileOne", "EfficientFormer", "MobileNetV2", "MobileCLIP"} <= families
        summary = calibration_summary()
        assert summary["predicted"] is True and "PREDICTED" in summary["note"]
        assert len(summary["families"]) == len(families)
        assert summary["lofo_mean_mape_pct"] > 0
        for key in ("lofo_max_mape_pct", "lofo_mean_spearman", "in_sample_mape_pct", "created", "csv_sha256"):
            assert summary[key] is not None
        assert all({"family", "n_models", "n_rows", "mape_pct", "spearman"} <= set(f) for f in summary["families"])

    def test_selection_record(self):
        m = load_cost_model()
        sel = m.provenance["model_selection"]
        names = [c.name for c in CANDIDATES]
        assert [c["name"] for c in sel["candidates"]] == names and sel["chosen"] in names
        chosen = CANDIDATES[names.index(sel["chosen"])]
        assert m.feature_names == chosen.feature_names
        assert m.provenance["lofo_kind"] == "nested"
        assert all(f["chosen"] in names for f in m.provenance["lofo"]["families"])
        scores = [c["lofo_mean_mape_pct"] for c in sel["candidates"]]
        assert min(scores) == pytest.approx(m.provenance["lofo_unnested"]["mean_mape_pct"])
        assert dict(zip(m.feature_names, m.coefficients))[MACS_FEATURE] >= MAC_FLOOR_MS * (1 - 1e-12)
        assert m.version.startswith(f"v{FORMAT_VERSION} ")


def _widen(genome: search_space.Genome, factor: float) -> search_space.Genome:
    stages = tuple(dataclasses.replace(st, width=int(round(st.width * factor / 8)) * 8) for st in genome.stages)
    return dataclasses.replace(genome, stages=stages)


def _deepen(genome: search_space.Genome, stage: int) -> search_space.Genome:
    stages = list(genome.stages)
    stages[stage] = dataclasses.replace(stages[stage], depth=stages[stage].depth + 1)
    return dataclasses.replace(genome, stages=tuple(stages))


class TestShippedModelSanity:
    """The shipped iphone12 model on RepNAS networks: positive, monotone, additive (no calibration here)."""

    @pytest.fixture(scope="class")
    def db(self, tmp_path_factory):
        return tmp_path_factory.mktemp("iphone12") / "x.db"

    def test_lut_sum_equals_whole_network(self, db, repvit_features):
        g = search_space.zoo["repvit_m0_9"]
        lut = latency_lut.predict_latency(g, "iphone12", 224, db=db)
        # repvit_features are those of the whole deployed network, i.e. what predict_model_latency prices
        assert lut == pytest.approx(load_cost_model().predict(repvit_features), rel=1e-9)
        small = search_space.zoo["convnext_atto"]
        whole = latency_lut.predict_model_latency(search_space.build_model(small), "iphone12", (3, 224, 224))
        assert latency_lut.predict_latency(small, "iphone12", 224, db=db) == pytest.approx(whole, rel=1e-9)

    @pytest.mark.parametrize("name", ["repvit_m0_9", "convnext_atto"])
    def test_monotone_in_depth(self, db, name):
        g = search_space.zoo[name]
        base = latency_lut.predict_latency(g, "iphone12", 224, db=db)
        assert math.isfinite(base) and base > load_cost_model().intercept_ms
        for stage in range(4):
            assert latency_lut.predict_latency(_deepen(g, stage), "iphone12", 224, db=db) > base

    def test_monotone_in_width_and_resolution(self, db):
        g = search_space.zoo["convnext_atto"]
        base = latency_lut.predict_latency(g, "iphone12", 224, db=db)
        assert latency_lut.predict_latency(_widen(g, 1.5), "iphone12", 224, db=db) > base
        assert latency_lut.predict_latency(g, "iphone12", 288, db=db) > base

    def test_depthwise_kernel_7_costs_more_than_3(self):
        costs = {}
        for k in (3, 5, 7):
            costs[k] = unit_cost_ms(nn.Conv2d(192, 192, k, padding=k // 2, groups=192), (192, 14, 14))
        assert 0 < costs[3] < costs[5] < costs[7]
        for c, hw in ((64, 56), (192, 14)):
            sig = {"type": "block", "mixer": "repdw", "ffn_ratio": 2, "ffn_kernel": 0, "se": False, "in": [c, hw, hw],
                   "stride": 1}
            k3, k7 = (unit_cost_ms(build_unit(dict(sig, kernel=k)), (c, hw, hw)) for k in (3, 7))
            assert 0 < k3 < k7

    def test_unit_costs_positive_for_every_block_kind(self):
        for sig in (
                {"type": "block", "mixer": "repdw", "kernel": 5, "ffn_ratio": 3, "ffn_kernel": 3, "se": True,
                 "in": [96, 28, 28], "stride": 1},
                {"type": "block", "mixer": "attention", "ffn_ratio": 2, "ffn_kernel": 0, "se": False,
                 "in": [256, 14, 14], "stride": 1},
                {"type": "se", "in": [128, 28, 28], "stride": 1},
        ):
            assert unit_cost_ms(build_unit(sig), tuple(sig["in"])) > 0


@pytest.mark.parametrize(
    "text, name, expected",
    [
        ("224", "repvit_m0_9", (224, False)),
        ("224 (not stated in README)", "mobileone_s0", (224, True)),
        ("not stated", "fastvit_t8", (256, True)),
        ("not stated", "efficientformer_l1", (224, True)),
        ("", "fastvit_mci0", (256, True)),
    ],
)
def test_parse_resolution(text, name, expected):
    assert _parse_resolution(text, name) == expected


def test_family_of():
    assert family_of("MobileCLIP-S0 image encoder (MCi0)", "fastvit_mci0") == "MobileCLIP"
    assert family_of("MobileNetV2 (x1.0)", "mobilenetv2_100") == "MobileNetV2"
    assert family_of("RepViT-M1 (v1 naming, arXiv v1)", "repvit_m1") == "RepViT"
    assert family_of("Foo-Bar", "foo_bar") == "Foo"
    assert family_of("EfficientFormerV2-S1", "efficientformerv2_s1") == "EfficientFormerV2"
    assert family_of("EfficientFormer-L1", "efficientformer_l1") == "EfficientFormer"
    assert family_of("MobileViTv2-1.0", "mobilevitv2_100") == "MobileViTv2"
    assert family_of("MobileViT-XS", "mobilevit_xs") == "MobileViT"
    assert family_of("Next-ViT-S @384", "nextvit_small") == "Next-ViT"
    assert family_of("MobileNetV3-Large (backbone @512)", "mobilenetv3_large_100") == "MobileNetV3"
