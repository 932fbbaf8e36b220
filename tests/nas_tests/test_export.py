"""python -m nas.export: hub-layout folder, timm loading in a fresh process, the ONNX check, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from nas.export import main
from nas.search import main as search_main

ROOT = Path(__file__).resolve().parents[2]
RUNS = ["--runs", "5"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A storage with a trained-proxy study 't' ranked by accuracy (weights kept), a zero-cost study 'z' (no
    weights), a study 'v' ranked by validation loss and a study 'bad' holding a failed, a running
    and a rejected trial."""
    d = tmp_path_factory.mktemp("export")
    lut = str(d / "lut.db")
    common = ["--device", "iphone12", "--dataset", "synthetic", "--storage", str(d / "s.db"), "--lut-db", lut,
              "--no-progress", "--no-baselines", "--threads", "1"]
    assert search_main([*common, "--study", "t", "--out", str(d / "run-t"), "--trials", "2", "--epochs", "1",
                        "--rungs", "192", "--proxy-score", "accuracy"]) == 0
    assert search_main([*common, "--study", "z", "--out", str(d / "run-z"), "--trials", "2",
                        "--proxy", "zero-cost"]) == 0
    assert search_main([*common, "--study", "v", "--out", str(d / "run-v"), "--trials", "1", "--rungs", "192",
                        "--proxy-score", "val-loss"]) == 0
    st = optuna.create_study(study_name="bad", storage=f"sqlite:///{d / 's.db'}", directions=["maximize", "minimize"])
    failed = st.ask()
    failed.set_user_attr("fail_reason", "ProxyTrainingError: loss is NaN")
    st.tell(failed, state=optuna.trial.TrialState.FAIL)
    st.ask()  # left RUNNING
    pruned = st.ask()
    pruned.set_user_attr("rejected", "rejected before training: 9.1 ms is over 1.2x the budget")
    st.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    return {"dir": d, "storage": str(d / "s.db"), "lut": lut}


def _trial_with_weights(study, name: str = "t") -> optuna.trial.FrozenTrial:
    st = optuna.load_study(study_name=name, storage=f"sqlite:///{study['storage']}")
    kept = [t for t in st.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if t.user_attrs.get("weights")]
    assert kept, "the trained-proxy study kept no weights"
    return kept[0]


def _export(study, out: Path, *extra: str, name: str = "t") -> int:
    return main(["--storage", study["storage"], "--study", name, "--out", str(out), "--lut-db", study["lut"],
                 *RUNS, *extra])


def test_export_writes_a_timm_hub_folder_with_a_checked_onnx(study, tmp_path, capsys):
    t = _trial_with_weights(study)
    out = tmp_path / "m"
    assert _export(study, out, "--trial", str(t.number), "--name", "phone_net") == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.onnx", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "repnas_phone_net" and cfg["num_classes"] == 10
    assert cfg["model_args"]["genome"] == t.user_attrs["genome"]
    pc = cfg["pretrained_cfg"]
    assert pc["num_classes"] == 10 and pc["classifier"] == "head.fc" and tuple(pc["input_size"]) == (3, 224, 224)
    assert len(pc["mean"]) == 3 and len(pc["std"]) == 3
    assert cfg["repnas"]["trial"] == t.number and cfg["repnas"]["accuracy"] == pytest.approx(t.values[0])
    # the weights are the trial's, byte for byte
    from safetensors.torch import load_file

    kept, exported = load_file(t.user_attrs["weights"]), load_file(str(out / "model.safetensors"))
    assert kept.keys() == exported.keys() and all(torch.equal(kept[k], exported[k]) for k in kept)
    card = (out / "README.md").read_text()
    assert "MEASURED" in card and "PREDICTED" in card and "leave-one-family-out" in card
    assert f"{t.values[0]:.4f}" in card and "synthetic" in card and '"stages"' in card
    measured = float(card.split("| ort-cpu | ")[1].split(" |")[0])
    assert 0 < measured < 10_000
    printed = capsys.readouterr().out
    assert "repnas_phone_net" in printed and "create_model_from_dir" in printed
    # an independent check of the ONNX file: deployed at 224, batch 1, agrees with the torch model
    import onnxruntime as ort

    import search_space

    model = search_space.create_model_from_dir(out).eval()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert list(sess.get_inputs()[0].shape) == [1, 3, 224, 224]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-4 + 1e-5 * np.abs(ref).max()
    # the deployed graph holds no BatchNorm left to fold
    import onnx

    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}


def test_timm_loads_the_folder_in_a_fresh_process(study, tmp_path, capsys):
    t = _trial_with_weights(study)
    out = tmp_path / "fresh"
    assert _export(study, out, "--trial", str(t.number), "--name", "fresh_net") == 0, capsys.readouterr().err
    script = textwrap.dedent(f"""
        import torch, timm
        from safetensors.torch import load_file
        import search_space

        D = {str(out)!r}
        sd = load_file(D + "/model.safetensors")
        same = lambda m: all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
        assert search_space.register_dir(D) == "repnas_fresh_net"
        m = timm.create_model("repnas_fresh_net", pretrained=True,
                              pretrained_cfg_overlay=dict(file=D + "/model.safetensors"))
        assert type(m).__name__ == "RepNASNet" and same(m) and m.num_classes == 10
        assert same(search_space.create_model_from_dir(D))
        assert same(timm.create_model("local-dir:" + D, pretrained=True))
        # another num_classes: the classifier is re-initialized, the rest is loaded
        m5 = timm.create_model("repnas_fresh_net", pretrained=True, num_classes=5)
        assert m5.get_classifier().weight.shape[0] == 5
        body = {{k: v for k, v in sd.items() if not k.startswith("head.fc.")}}
        assert all(torch.equal(m5.state_dict()[k], v) for k, v in body.items())
        assert not torch.equal(search_space.create_model_from_dir(D, num_classes=5).get_classifier().weight[:5],
                               sd["head.fc.weight"][:5])
        # timm's reparameterize_model gives the deployed form, equal in eval mode
        m.eval()
        x = torch.randn(1, 3, 224, 224)
        with torch.inference_mode():
            a = m(x)
            d = timm.utils.reparameterize_model(m)
            b = d(x)
        assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in d.modules())
        assert (a - b).abs().max() <= 1e-4 + 1e-5 * a.abs().max().item(), (a - b).abs().max()
        cfg = timm.data.resolve_data_config({{}}, model=m)
        assert cfg["input_size"] == (3, 224, 224) and len(cfg["mean"]) == 3
        print("ok")
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_pareto_exports_each_front_trial(study, tmp_path, capsys):
    out = tmp_path / "front"
    assert _export(study, out, "--pareto") == 0, capsys.readouterr().err
    st = optuna.load_study(study_name="t", storage=f"sqlite:///{study['storage']}")
    from nas import SearchConfig
    from nas._report import pareto_front
    from nas._search import candidate_from_trial

    front = [c for c in pareto_front([candidate_from_trial(t, SearchConfig()) for t in st.get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))]) if "duplicate_of" not in c.extra]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"t_trial{c.number}" for c in front)
    for c in front:
        cfg = json.loads((out / f"t_trial{c.number}" / "config.json").read_text())
        assert cfg["architecture"] == f"repnas_t_trial{c.number}" and cfg["model_args"]["genome"] == c.genome


def test_trial_without_weights_exports_the_architecture(study, tmp_path, capsys):
    out = tmp_path / "zc"
    assert _export(study, out, "--trial", "0", name="z") == 0, capsys.readouterr().err
    assert not (out / "model.safetensors").exists() and (out / "model.onnx").is_file()
    assert "no `model.safetensors`" in (out / "README.md").read_text()
    import search_space

    model = search_space.create_model_from_dir(out)  # pretrained only where the folder has weights
    assert model.num_classes == 10
    with pytest.raises(search_space.ModelDirError, match="no model.safetensors"):
        search_space.create_model_from_dir(out, pretrained=True)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["repnas"]["weights"] is False and "zero-cost" in cfg["repnas"]["metric"]
    assert cfg["repnas"]["accuracy"] is None and cfg["repnas"]["score"] is not None


def test_a_study_ranked_by_validation_loss_exports_its_accuracy_beside_the_score(study, tmp_path, capsys):
    t = _trial_with_weights(study, "v")
    out = tmp_path / "v"
    assert _export(study, out, "--trial", str(t.number), name="v") == 0, capsys.readouterr().err
    m = json.loads((out / "config.json").read_text())["repnas"]
    a = t.user_attrs
    assert m["metric"] == "minus proxy validation loss" and m["score_is_accuracy"] is False
    assert m["score"] == pytest.approx(t.values[0]) == pytest.approx(-sum(a["losses"]) / len(a["losses"]))
    assert m["accuracy"] == pytest.approx(sum(a["accuracies"]) / len(a["accuracies"]))
    assert m["score_sd"] == pytest.approx(a["loss_sd"]) and m["accuracy_sd"] == pytest.approx(a["accuracy_sd"])
    card = (out / "README.md").read_text()
    assert f"proxy accuracy: **{m['accuracy']:.4f}**" in card
    assert "the search ranked by minus proxy validation loss" in card
    assert f"{m['accuracy']:.4f}" in capsys.readouterr().out  # the summary table shows the accuracy, not the score


def test_fresh_initialized_onnx_agrees_absolutely():
    from nas._export import _check_onnx
    from search_space import build_model, reparameterize, zoo
    from search_space._export import export_onnx

    m = build_model(zoo["repvit_m0_9"], num_classes=10).eval()
    d = reparameterize(m, inplace=False).eval()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.onnx"
        export_onnx(d, p, (3, 224, 224))
        diff = _check_onnx(m, d, p, 224)
    assert diff["output_abs_max"] < 10 and diff["onnx_vs_torch"] <= 1e-4


def _read_all(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_input_one_message_nothing_overwritten(study, tmp_path, capsys):
    t = _trial_with_weights(study)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    cases = [
        (["--study", "nope", "--trial", "0", "--out", str(tmp_path / "a")], "no study 'nope'"),
        (["--study", "t", "--trial", "99", "--out", str(tmp_path / "a")], "has no trial 99"),
        (["--study", "t", "--trial", "-1", "--out", str(tmp_path / "a")], "trial number"),
        (["--study", "bad", "--trial", "0", "--out", str(tmp_path / "a")], "is FAIL (ProxyTrainingError"),
        (["--study", "bad", "--trial", "1", "--out", str(tmp_path / "a")], "is RUNNING"),
        (["--study", "bad", "--trial", "2", "--out", str(tmp_path / "a")], "is PRUNED"),
        (["--study", "t", "--trial", str(t.number), "--out", str(busy)], "not empty; pass --force"),
        (["--study", "t", "--pareto", "--out", str(busy)], "not empty; pass --force"),
        (["--study", "t", "--trial", str(t.number), "--out", str(tmp_path / "a"), "--name", "Bad-Name"],
         "lower-case letters"),
        (["--study", "t", "--trial", str(t.number), "--out", str(tmp_path / "a"), "--name", "fastvit_t8"],
         "seed zoo model"),
        (["--study", "t", "--trial", str(t.number), "--out", str(tmp_path / "no" / "such" / "dir")],
         "parent folder"),
        (["--study", "t", "--trial", str(t.number), "--out", str(tmp_path / "a"), "--runs", "0"], "--runs"),
    ]
    for args, msg in cases:
        rc = main(["--storage", study["storage"], "--lut-db", study["lut"], *args])
        err = capsys.readouterr().err
        assert rc == 2, (args, err)
        assert msg in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (args, err)
        assert "Traceback" not in err
    assert _read_all(busy) == {"keep.txt": b"mine"}
    assert not (tmp_path / "a").exists()
    for missing in (tmp_path / "missing-dir" / "s.db", tmp_path / "none.db"):
        rc = main(["--storage", str(missing), "--study", "t", "--trial", "0", "--out", str(tmp_path / "a")])
        assert rc == 2 and "no storage file" in capsys.readouterr().err
        assert not missing.exists()  # an export never creates a storage


def test_missing_weights_file_is_an_error_not_a_silent_random_init(study, tmp_path, capsys, monkeypatch):
    t = _trial_with_weights(study)
    w = Path(t.user_attrs["weights"])
    moved = w.with_suffix(".moved")
    w.rename(moved)
    try:
        rc = _export(study, tmp_path / "m", "--trial", str(t.number))
        err = capsys.readouterr().err
        assert rc == 2 and "weights" in err and "--no-weights" in err
        assert not (tmp_path / "m").exists()
        assert _export(study, tmp_path / "m", "--trial", str(t.number), "--no-weights") == 0
        assert not (tmp_path / "m" / "model.safetensors").exists()
    finally:
        moved.rename(w)


def test_force_replaces_only_after_success(study, tmp_path, capsys, monkeypatch):
    t = _trial_with_weights(study)
    out = tmp_path / "m"
    assert _export(study, out, "--trial", str(t.number)) == 0
    before = _read_all(out)
    import nas._export as ex

    def broken(*a, **k):
        raise ex.ExportError("ONNX check failed: injected")

    monkeypatch.setattr(ex, "_check_onnx", broken)
    assert _export(study, out, "--trial", str(t.number), "--force") == 2
    assert "injected" in capsys.readouterr().err
    assert _read_all(out) == before  # the failed export left the folder as it was
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    monkeypatch.undo()
    (out / "stale.txt").write_text("old")
    assert _export(study, out, "--trial", str(t.number), "--force", "--name", "renamed") == 0
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "config.json").read_text())["architecture"] == "repnas_renamed"


def test_coreml_needs_coremltools(study, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "coremltools" else real(n, *a))
    assert _export(study, tmp_path / "m", "--trial", "0", "--coreml") == 2
    assert "pip install coremltools" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_coreml_export_writes_an_ml_program(study, tmp_path, capsys):
    pytest.importorskip("coremltools")
    t = _trial_with_weights(study)
    out = tmp_path / "m"
    assert _export(study, out, "--trial", str(t.number), "--coreml") == 0, capsys.readouterr().err
    pkg = out / "model.mlpackage"
    assert pkg.is_dir() and (pkg / "Manifest.json").is_file()
    import coremltools as ct

    spec = ct.utils.load_spec(str(pkg))
    assert [i.name for i in spec.description.input] == ["input"]
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 3, 224, 224]
    assert "Core ML" in (out / "README.md").read_text()


def test_register_dir_rejects_bad_folders(tmp_path):
    import search_space
    from search_space import ModelDirError

    with pytest.raises(ModelDirError, match="not a folder"):
        search_space.register_dir(tmp_path / "missing")
    with pytest.raises(ModelDirError, match="no config.json"):
        search_space.register_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="not valid JSON"):
        search_space.register_dir(tmp_path)
    good = {"architecture": "repnas_x1", "num_classes": 10, "pretrained_cfg": {},
            "model_args": {"genome": search_space.zoo["repvit_m0_9"].to_dict()}}
    for patch, msg in [({"architecture": "resnet50"}, "repnas_"), ({"architecture": "repnas_fastvit_t8"}, "seed zoo"),
                       ({"model_args": {}}, "no 'genome'"),
                       ({"model_args": {"genome": {"stem": "nope"}}}, "invalid genome")]:
        (tmp_path / "config.json").write_text(json.dumps({**good, **patch}))
        with pytest.raises(ModelDirError, match=msg):
            search_space.register_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(good))
    assert search_space.register_dir(tmp_path) == "repnas_x1"
    import timm

    assert timm.create_model("repnas_x1").num_classes == 10


def test_zoo_entrypoints_take_another_genome():
    import timm

    from search_space import zoo

    m = timm.create_model("repnas_fastvit_t8", genome=zoo["repvit_m0_9"], num_classes=3)
    assert m.genome.to_dict() == zoo["repvit_m0_9"].to_dict() and m.num_classes == 3


def test_force_never_replaces_a_folder_that_is_not_an_export(study, tmp_path, capsys):
    """--force on the search's run folder (proxy weights) or on a folder holding the storage deletes nothing."""
    t = _trial_with_weights(study)
    for target in (study["dir"] / "run-t", study["dir"]):
        before = _read_all(target)
        assert _export(study, target, "--trial", str(t.number), "--force") == 2
        err = capsys.readouterr().err
        assert "not an earlier export" in err and len(err.strip().splitlines()) == 1
        assert _read_all(target) == before


def test_pareto_is_all_or_nothing(study, tmp_path, capsys):
    st = optuna.load_study(study_name="t", storage=f"sqlite:///{study['storage']}")
    kept = [t for t in st.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if t.user_attrs.get("weights")]
    w = Path(kept[-1].user_attrs["weights"])
    moved = w.with_suffix(".moved")
    w.rename(moved)
    try:
        assert _export(study, tmp_path / "front", "--pareto") == 2
        assert "weights" in capsys.readouterr().err
        assert not (tmp_path / "front").exists()
        assert not [p for p in tmp_path.rglob(".*")]  # no temporary folders left
    finally:
        moved.rename(w)


def test_library_arguments_are_checked_before_any_work(study, tmp_path):
    from nas import ExportError, export_pareto, export_trial

    base = dict(storage=study["storage"], out=tmp_path / "m")
    for kwargs, msg in [(dict(study="t", trial=0, measure_runs=0), "--runs"),
                        (dict(study=None, trial=0), "--study"),
                        (dict(study="t", trial="0"), "trial number"),
                        (dict(study="t", trial=0, force="yes"), "force must be"),
                        (dict(study="t", trial=0, weights=1), "weights must be")]:
        with pytest.raises(ExportError, match=msg):
            export_trial(**base, **kwargs)
    with pytest.raises(ExportError, match="--runs"):
        export_pareto(**base, study="t", measure_runs=-1)
    assert not (tmp_path / "m").exists()
