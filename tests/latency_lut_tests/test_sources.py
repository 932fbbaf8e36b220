"""Latency sources: a second predicted device is a registered source plus a data file, priced and labelled through
the public API; labels and source words come from the source; no module of one package (search_space, latency_lut,
nas) imports another package's private module."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

import latency_lut
from latency_lut import (
    CostModel,
    CostModelSource,
    LatencyRecord,
    LatencySource,
    LatencyTable,
    Source,
    UnknownDeviceError,
    get_device,
    latency_label,
    predict_latency,
    predict_model_latency,
    register_device,
    source_word,
    units_of_genome,
    unregister_device,
)
from latency_lut.__main__ import main as cli
from search_space import SearchSpace, build_model, reparameterize

ROOT = Path(__file__).resolve().parents[2]
TINY = SearchSpace(resolution=64, widths=((16,), (32,), (48,), (64,)), depths=((1, 1),) * 4, kernel_sizes=(3,),
                   ffn_kernel_sizes=(0,), ffn_ratios=(2,), se_modes=("none",), downsamples=("metaformer",),
                   stems=("patchify",), heads=("linear",))
MACS = "conv_dense.macs+conv_pointwise.macs+conv_depthwise.macs+conv_grouped.macs+matmul.macs+matmul_dynamic.macs"
TOY_LABEL = "PREDICTED for toyphone by a cost model, not measured (leave-one-family-out MAPE 42.0%)"


def _write_model(path: Path, features: tuple[str, ...], coefficients: tuple[float, ...], intercept: float) -> Path:
    """A toy phone's data file: a cost model with a (made-up) leave-one-family-out record."""
    provenance = {"created": "2024-01-01T00:00:00+00:00", "csv": {"sha256": "0" * 64}, "lofo_kind": "plain",
                  "lofo": {"mean_mape_pct": 42.0, "max_mape_pct": 50.0, "mean_spearman": 0.5,
                           "families": [{"family": "Toy", "n_models": 2, "mape_pct": 42.0, "spearman": 0.5}]}}
    path.write_text(CostModel(features, coefficients, intercept, provenance).to_json(), encoding="utf-8")
    return path


@pytest.fixture
def toyphone(tmp_path):
    """A second predicted device: a CostModelSource instance and its JSON file, nothing else."""
    src = register_device(CostModelSource(
        "toyphone", "costmodel-toyphone", "a toy phone: PREDICTED by a made-up cost model",
        model_path=_write_model(tmp_path / "toyphone_costmodel.json", (MACS, "total.weight_bytes"), (2e-8, 1e-7),
                                0.25),
        calibrated_on="two made-up latencies"))
    yield src
    unregister_device("toyphone")


class ParamsPhone(CostModelSource):
    """A predicted device whose cost model reads other features: a new class, and nothing changed elsewhere."""

    def features(self, module, input_size):
        return {"params": float(sum(p.numel() for p in module.parameters()))}


@pytest.fixture
def paramsphone(tmp_path):
    src = register_device(ParamsPhone("paramsphone", "costmodel-params", "ms per parameter",
                                      model_path=_write_model(tmp_path / "params.json", ("params",), (1e-5,), 0.5)))
    yield src
    unregister_device("paramsphone")


def test_a_registered_cost_model_device_prices_a_genome_through_the_public_api(tmp_path, toyphone):
    g = TINY.sample(3)
    table = LatencyTable(tmp_path / "lut.db")
    ms = predict_latency(g, "toyphone", 64, db=table, on_demand=False)  # predicted rows are always made on demand
    units = units_of_genome(g, 64)
    rows = {r.signature_key: r for r in table.records("toyphone")}
    assert set(rows) == {u.key for u in units}
    assert all(r.source is Source.PREDICTED and r.backend == "costmodel-toyphone" and r.runs == 0
               and r.versions == {"cost_model": toyphone.cost_model().version} for r in rows.values())
    # the LUT sum is the units' prices plus the intercept once, and equals the toy model's whole-network figure
    assert ms == pytest.approx(sum(u.count * rows[u.key].median_ms for u in units) + 0.25, rel=1e-12)
    assert ms == pytest.approx(predict_model_latency(build_model(g), "toyphone", (3, 64, 64)), rel=1e-9)
    assert predict_latency(g, "toyphone", 64, db=table) == ms  # stored rows price the same
    # its figures are labelled by the source, wherever they are shown
    assert latency_label("toyphone") == toyphone.label() == TOY_LABEL
    assert source_word("toyphone") == "predicted" and get_device("toyphone").kind == "predicted"
    assert toyphone.error_statement() == ("toyphone latencies are PREDICTED by a cost model calibrated on two "
                                          "made-up latencies, not measured; leave-one-family-out error 42.0% MAPE")
    assert latency_lut.calibration_summary("toyphone")["lofo_mean_mape_pct"] == 42.0


def test_the_cli_lists_prices_and_labels_a_registered_device(tmp_path, toyphone, capsys):
    assert cli(["devices", "--db", str(tmp_path / "lut.db")]) == 0
    out = capsys.readouterr().out
    assert "toyphone" in out and "mean MAPE 42.0%" in out and "Toy" in out
    g = tmp_path / "g.json"
    g.write_text(TINY.sample(4).to_json(), encoding="utf-8")
    assert cli(["predict", str(g), "--device", "toyphone", "--db", str(tmp_path / "lut.db")]) == 0
    assert f"({TOY_LABEL})" in capsys.readouterr().out
    # a predicted device is not a remote one: bundle and import refuse it, as they refuse iphone12
    assert cli(["bundle", "--device", "toyphone", "--out", str(tmp_path / "b"), "--genome", str(g)]) == 2
    assert "PREDICTED" in capsys.readouterr().err


def test_a_subclass_with_its_own_features_is_all_a_new_kind_of_cost_model_needs(tmp_path, paramsphone):
    g = TINY.sample(5)
    ms = predict_latency(g, "paramsphone", 64, db=tmp_path / "lut.db")
    deployed_params = sum(p.numel() for p in reparameterize(build_model(g).eval()).parameters())
    assert ms == pytest.approx(0.5 + 1e-5 * deployed_params, rel=1e-9)
    assert latency_label("paramsphone").startswith("PREDICTED for paramsphone by a cost model")


def test_labels_and_source_words_of_measured_remote_and_iphone12():
    assert latency_label("ort-cpu") == "measured on ort-cpu (sum of measured per-block LUT medians)"
    assert latency_label("my-pi") == "measured on remote device my-pi (imported per-block LUT)"
    assert latency_label("iphone12").startswith(
        "PREDICTED for iphone12 by a cost model, not measured (leave-one-family-out median error ")
    assert [source_word(d) for d in ("ort-cpu", "iphone12", "my-pi")] == ["measured", "predicted", "imported"]
    for name in ("ort-cpu", "iphone12", "my-pi"):
        src = get_device(name, allow_remote=True)
        assert isinstance(src, LatencySource) and src.source_word == src.source.value and src.error_statement()
    assert get_device("my-pi", allow_remote=True) is get_device("my-pi", allow_remote=True)


def test_registration_is_checked(tmp_path, toyphone):
    model = tmp_path / "toyphone_costmodel.json"
    with pytest.raises(ValueError, match="already registered"):
        register_device(CostModelSource("toyphone", "b", "d", model_path=model))
    with pytest.raises(ValueError, match="not well formed"):
        register_device(CostModelSource("Toy Phone", "b", "d", model_path=model))
    with pytest.raises(TypeError):
        register_device("toyphone")  # type: ignore[arg-type]
    unregister_device("toyphone")
    with pytest.raises(UnknownDeviceError):
        get_device("toyphone")
    register_device(toyphone)


def test_a_missing_cost_model_file_is_one_clear_error(tmp_path):
    register_device(CostModelSource("nofile", "b", "d", model_path=tmp_path / "absent.json", refit_hint=" (refit)"))
    try:
        with pytest.raises(latency_lut.CostModelError, match=r"cannot read the nofile cost model .*\(refit\)"):
            predict_latency(TINY.sample(0), "nofile", 64, db=tmp_path / "lut.db")
        assert latency_label("nofile") == ("PREDICTED for nofile by a cost model, not measured (calibration error "
                                           "not available)")
    finally:
        unregister_device("nofile")


def test_imported_rows_price_with_the_overhead_their_runner_recorded(tmp_path):
    g = TINY.sample(1)
    table = LatencyTable(tmp_path / "lut.db")
    with pytest.raises(UnknownDeviceError, match="no rows"):
        predict_latency(g, "toy-pi", 64, db=table)
    units = units_of_genome(g, 64)
    for i, u in enumerate(units):
        table.add(LatencyRecord(device="toy-pi", signature_key=u.key, block_type=u.block_type, signature=u.signature,
                                median_ms=1.0, p10_ms=0.9, p90_ms=1.1, runs=5, source=Source.IMPORTED,
                                backend="onnxruntime-remote", versions={"call_overhead_ms": f"{0.01 * (i + 1):.5f}"},
                                threads=1, created_at=dt.datetime.now(dt.timezone.utc)))
    overhead = sorted(0.01 * (i + 1) for i in range(len(units)))
    median = (overhead[(len(units) - 1) // 2] + overhead[len(units) // 2]) / 2
    assert predict_latency(g, "toy-pi", 64, db=table) == pytest.approx(sum(u.count for u in units) + median)


def test_no_kind_string_branches_outside_the_sources():
    for name in ("_lut.py", "_validate.py", "_bundle.py", "__main__.py"):
        text = (ROOT / "latency_lut" / name).read_text(encoding="utf-8")
        assert ".kind ==" not in text and ".kind !=" not in text and 'kind == "' not in text, name


def _private_imports(path: Path, package: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [n for n in names if n.startswith(f"{package}._")]
    return found


PACKAGES = ("search_space", "latency_lut", "nas")


def test_no_module_of_one_package_imports_another_packages_private_module():
    offenders = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            hits = [h for other in PACKAGES if other != folder for h in _private_imports(path, other)]
            if hits:
                offenders[str(path.relative_to(ROOT))] = sorted(set(hits))
    assert offenders == {}


def test_no_script_imports_latency_lut_or_search_space_private_modules():
    assert not {str(p.relative_to(ROOT)): h for p in sorted((ROOT / "scripts").rglob("*.py"))
                for pkg in ("latency_lut", "search_space") if (h := _private_imports(p, pkg))}


def test_the_names_other_packages_need_are_public():
    import search_space

    for name in ("STAGE_STRIDES", "check_resolution", "as_genome", "export_onnx", "onnx_session", "OPSET",
                 "create_repnas", "default_cfg_for", "check_model_name", "units_of", "build_unit"):
        assert name in search_space.__all__ and hasattr(search_space, name), name
