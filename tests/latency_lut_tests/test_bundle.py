"""Remote devices: bundle -> run_bundle.py (numpy + onnxruntime only) -> import, and every rejection."""

from __future__ import annotations

import ast
import copy
import datetime as dt
import json
import math
import shutil
import subprocess
import sys

import pytest

from latency_lut import LatencyLookupError, LatencyRecord, LatencyTable, Source, predict_latency, units_of_genome
from latency_lut.__main__ import main as cli
from latency_lut._signatures import signature_key
from search_space import zoo

DEVICE = "my-pi"
RES = 64
GENOMES = ("repvit_m0_9", "fastvit_t8")
RUNNER_ARGS = ["--runs", "5", "--warmup", "1", "--quiet"]


def _run_runner(bundle, *args, cwd):
    return subprocess.run([sys.executable, str(bundle / "run_bundle.py"), *RUNNER_ARGS, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bundle_and_results(tmp_path_factory):
    """A bundle of two small zoo genomes at 64x64, timed here by its runner in two sittings (resume)."""
    root = tmp_path_factory.mktemp("remote")
    bundle = root / "bundle"
    argv = ["bundle", "--device", DEVICE, "--out", str(bundle), "--resolution", str(RES), "--no-progress",
            "--db", str(root / "empty.db")]
    for g in GENOMES:
        argv += ["--genome", g]
    assert cli(argv) == 0
    first = _run_runner(bundle, "--limit", "4", cwd=root)  # default --out: results.json next to the manifest
    assert first.returncode == 0, first.stderr
    partial = json.loads((bundle / "results.json").read_text())
    assert len(partial["results"]) == 4
    second = _run_runner(bundle, cwd=root)
    assert second.returncode == 0, second.stderr
    results = json.loads((bundle / "results.json").read_text())
    for key, entry in partial["results"].items():
        assert results["results"][key] == entry  # resumed: the first sitting's timings were kept, not redone
    return bundle, results


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def _rows(db) -> list[LatencyRecord]:
    return LatencyTable(db).records()


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bundle_contents(bundle_and_results):
    bundle, results = bundle_and_results
    manifest = json.loads((bundle / "manifest.json").read_text())
    keys = {u.key for g in GENOMES for u in units_of_genome(zoo[g], RES)}
    assert manifest["device"] == DEVICE and manifest["format_version"] == 1
    assert {"repnas", "onnx", "torch"} <= set(manifest["versions"])
    assert {e["key"] for e in manifest["entries"]} == keys
    for e in manifest["entries"]:
        assert signature_key(e["signature"]) == e["key"] and e["input_shape"] == e["signature"]["in"]
        assert (bundle / e["file"]).is_file() and e["file"].endswith(".onnx") and len(e["sha256"]) == 64
    assert (bundle / manifest["overhead"]["file"]).is_file()
    assert "pip install numpy onnxruntime" in (bundle / "README.txt").read_text()
    assert set(results["results"]) == keys and results["bundle_id"] == manifest["bundle_id"]
    assert results["timings_include_call_overhead"] is True and results["call_overhead_ms"] > 0
    assert results["host"]["threads"] == 1 and results["host"]["onnxruntime"]


def test_round_trip_import_and_predict(bundle_and_results, tmp_path, capsys):
    bundle, results = bundle_and_results
    db = tmp_path / "lut.db"
    assert cli(["import", "--device", DEVICE, str(bundle / "results.json"), "--db", str(db)]) == 0
    assert f"{len(results['results'])} rows stored, 0 already present" in capsys.readouterr().out
    table = LatencyTable(db)
    rows = {r.signature_key: r for r in table.records(DEVICE)}
    assert set(rows) == set(results["results"])
    overhead = results["call_overhead_ms"]
    for key, r in rows.items():
        raw = results["results"][key]
        assert r.source is Source.IMPORTED and r.backend == "onnxruntime-remote" and r.threads == 1
        assert r.median_ms == pytest.approx(max(raw["median_ms"] - overhead, 0.0))
        assert r.p10_ms <= r.median_ms <= r.p90_ms
        assert float(r.versions["call_overhead_ms"]) == pytest.approx(overhead, abs=1e-5)
        assert r.versions["onnxruntime"] == results["host"]["onnxruntime"]

    for name in GENOMES:
        units = units_of_genome(zoo[name], RES)
        ms = predict_latency(zoo[name], DEVICE, RES, db=table)
        blocks = sum(u.count * rows[u.key].median_ms for u in units)
        assert ms > 0 and ms == pytest.approx(blocks + float(rows[units[0].key].versions["call_overhead_ms"]))
    with pytest.raises(LatencyLookupError, match="bundle"):
        predict_latency(zoo["convnext_atto"], DEVICE, RES, db=table)  # never bundled: named, not guessed

    # importing again stores nothing and changes nothing; a new bundle has nothing left to do
    assert cli(["import", "--device", DEVICE, str(bundle / "results.json"), "--db", str(db)]) == 0
    assert f"0 rows stored, {len(rows)} already present" in capsys.readouterr().out
    assert {r.signature_key: r for r in table.records(DEVICE)} == rows
    argv = ["bundle", "--device", DEVICE, "--out", str(tmp_path / "again"), "--resolution", str(RES),
            "--genome", GENOMES[0], "--db", str(db), "--no-progress"]
    assert cli(argv) == 0
    assert "nothing to bundle" in capsys.readouterr().out and not (tmp_path / "again").exists()


def test_bundle_limit_writes_only_missing_signatures(tmp_path, capsys):
    db = LatencyTable(tmp_path / "lut.db")
    units = units_of_genome(zoo["fastvit_t8"], RES)
    done = units[0]
    db.add(LatencyRecord(device=DEVICE, signature_key=done.key, block_type=done.block_type, signature=done.signature,
                         median_ms=1.0, p10_ms=0.9, p90_ms=1.1, runs=5, source=Source.IMPORTED,
                         backend="onnxruntime-remote", versions={}, threads=1,
                         created_at=dt.datetime.now(dt.timezone.utc)))
    out = tmp_path / "b"
    assert cli(["bundle", "--device", DEVICE, "--out", str(out), "--genome", "fastvit_t8", "--resolution", str(RES),
                "--limit", "2", "--db", str(tmp_path / "lut.db"), "--no-progress"]) == 0
    assert f"{len(units)} signatures, 1 already stored, 2 micro-models" in capsys.readouterr().out
    entries = json.loads((out / "manifest.json").read_text())["entries"]
    assert len(entries) == 2 and done.key not in {e["key"] for e in entries}


def test_runner_needs_only_stdlib_numpy_onnxruntime(bundle_and_results):
    bundle, _ = bundle_and_results
    tree = ast.parse((bundle / "run_bundle.py").read_text(), feature_version=(3, 8))  # old Pi / Termux Pythons
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the runner"
            modules.add(node.module.split(".")[0])
    assert {"numpy", "onnxruntime"} <= modules
    assert modules - {"numpy", "onnxruntime"} <= set(sys.stdlib_module_names), modules


def test_runner_refuses_damaged_files(bundle_and_results, tmp_path):
    bundle, _ = bundle_and_results
    copy_dir = tmp_path / "copy"
    shutil.copytree(bundle, copy_dir, ignore=shutil.ignore_patterns("results.json"))
    manifest = json.loads((copy_dir / "manifest.json").read_text())
    victim = copy_dir / manifest["entries"][0]["file"]
    victim.write_bytes(victim.read_bytes()[:-10])
    proc = _run_runner(copy_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "damaged" in proc.stderr and "Traceback" not in proc.stderr
    assert not (copy_dir / "results.json").exists()


def _mutations(results):
    """(name, argv tail for the device, mutated results or raw text, words the message must contain)."""
    key = sorted(results["results"])[0]

    def entry_change(fn):
        data = copy.deepcopy(results)
        fn(data["results"][key])
        return data

    bogus = {"type": "block", "mixer": "warp-drive", "ffn_ratio": 2, "ffn_kernel": 0, "se": False, "in": [48, 16, 16],
             "stride": 1}
    unknown = copy.deepcopy(results)
    unknown["results"][signature_key(bogus)] = dict(results["results"][key], signature=bogus, block_type="block")
    renamed = copy.deepcopy(results)
    renamed["results"][key]["signature"]["in"][0] += 1  # no longer hashes to its key

    def set_(**kw):
        return lambda e: e.update(kw)

    return [
        ("wrong device", dict(copy.deepcopy(results), device="other-pi"), ["other-pi", DEVICE]),
        ("unknown signature", unknown, ["unknown signature", signature_key(bogus)]),
        ("signature not matching its key", renamed, ["unknown signature", key]),
        ("negative timing", entry_change(set_(median_ms=-0.5, p10_ms=-0.6)), ["negative", key]),
        ("missing timing", entry_change(lambda e: e.pop("p90_ms")), ["missing p90_ms", key]),
        ("NaN timing", entry_change(set_(median_ms=math.nan)), ["nan", key]),
        ("p10 above median", entry_change(set_(p10_ms=1e3)), ["inconsistent", key]),
        ("malformed JSON", json.dumps(results)[:-40], ["malformed JSON", "line"]),
        ("not a results file", {"hello": 1}, ["not a results file"]),
        ("negative overhead", dict(copy.deepcopy(results), call_overhead_ms=-1.0), ["call_overhead_ms"]),
    ]


def test_rejected_results_store_nothing(bundle_and_results, tmp_path, capsys):
    bundle, results = bundle_and_results
    db = tmp_path / "lut.db"
    # something already stored for the device (half of a valid file), and for a built-in device
    half = dict(results, results=dict(sorted(results["results"].items())[: len(results["results"]) // 2]))
    assert cli(["import", "--device", DEVICE, str(_write(tmp_path / "half.json", half)), "--db", str(db)]) == 0
    LatencyTable(db).add(LatencyRecord(device="ort-cpu", signature_key="k", block_type="block", signature={},
                                       median_ms=1.0, p10_ms=1.0, p90_ms=1.0, runs=1, source=Source.MEASURED,
                                       backend="onnxruntime-cpu", versions={}, threads=1,
                                       created_at=dt.datetime.now(dt.timezone.utc)))
    capsys.readouterr()
    before = _rows(db)
    assert len(before) == len(half["results"]) + 1

    for name, data, words in _mutations(results):
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        assert cli(["import", "--device", DEVICE, str(path), "--db", str(db)]) == 2, name
        line = _one_error(capsys)
        assert str(path) in line and "nothing was stored" in line, (name, line)
        for w in words:
            assert w in line, (name, w, line)
        assert _rows(db) == before, name

    valid = bundle / "results.json"
    for argv, words in [
        (["import", "--device", "ort-cpu", str(valid)], ["built-in", "build --device ort-cpu"]),
        (["import", "--device", "iphone12", str(valid)], ["built-in", "PREDICTED"]),
        (["import", "--device", "My Pi!", str(valid)], ["unknown device"]),
        (["import", "--device", DEVICE, str(tmp_path / "no-such.json")], ["cannot read"]),
        (["bundle", "--device", DEVICE, "--out", str(bundle), "--genome", GENOMES[0]], ["not empty", "--force"]),
        (["bundle", "--device", "ort-cpu", "--out", str(tmp_path / "new"), "--genome", GENOMES[0]], ["built-in"]),
    ]:
        assert cli([*argv, "--db", str(db)]) == 2, argv
        line = _one_error(capsys)
        for w in words:
            assert w in line, (argv, w, line)
        assert _rows(db) == before, argv
    assert not (tmp_path / "new").exists()


def test_add_many_is_all_or_nothing_and_never_overwrites(tmp_path):
    table = LatencyTable(tmp_path / "lut.db")
    now = dt.datetime.now(dt.timezone.utc)

    def rec(key, ms):
        return LatencyRecord(device=DEVICE, signature_key=key, block_type="block", signature={"k": key},
                             median_ms=ms, p10_ms=ms, p90_ms=ms, runs=1, source=Source.IMPORTED,
                             backend="onnxruntime-remote", versions={}, threads=1, created_at=now)

    assert table.add_many([rec("a", 1.0), rec("b", 2.0)]) == 2
    assert table.add_many([rec("a", 9.0), rec("c", 3.0), rec("c", 4.0)]) == 1
    assert {k: table.get(DEVICE, k).median_ms for k in "abc"} == {"a": 1.0, "b": 2.0, "c": 3.0}
