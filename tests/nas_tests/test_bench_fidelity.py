"""scripts/bench_fidelity.py: recipes, panel, resumable results, bad input and the report's statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from nas import ProxyConfig
from scripts import bench_fidelity as bf
from search_space import Genome, StageGenome, zoo

TINY_PROXY = ProxyConfig(epochs=1, batch_size=32, train_size=128, val_size=64, bn_recalibration=32,
                         hopeless_after=None)
TINY_RECIPES = {r.name: r for r in (
    bf.Recipe("naswot", "zero-cost", "NASWOT", method="naswot"),
    bf.Recipe("default", "train", "tiny proxy", proxy=TINY_PROXY),
    bf.Recipe("reference", "train", "tiny reference", proxy=ProxyConfig(**{**TINY_PROXY.to_dict(), "epochs": 2}),
              score_split="test"),
)}


def _tiny(width: int, mixer3: str = "repdw") -> Genome:
    widths = (width, 2 * width, 2 * width, 3 * width)
    return Genome(stages=tuple(
        StageGenome(depth=1, width=w, mixer=mixer3 if i == 3 else "repdw", downsample="none" if i == 0 else "repvit")
        for i, w in enumerate(widths)), resolution=224)


def _write_panel(path: Path, genomes: dict[str, Genome]) -> None:
    entries = {}
    for i, (name, g) in enumerate(genomes.items()):
        entries[name] = {"source": "random", "key": g.key(), "latency_ms": 1.0 + 0.1 * i, "latency_resolution": 224,
                         **bf.size_of(g, 32), "genome": g.to_dict()}
    path.write_text(json.dumps({"format": bf.PANEL_FORMAT, "genomes": entries}))


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setattr(bf, "RECIPES", TINY_RECIPES)
    panel = tmp_path / "panel.json"
    _write_panel(panel, {"a": _tiny(8), "b": _tiny(16), "c": _tiny(16, "attention")})
    return {"panel": panel, "results": tmp_path / "results.jsonl", "md": tmp_path / "BENCHMARKS.md",
            "plot": tmp_path / "fidelity" / "tau.png"}


def _run(paths: dict[str, Path], *args: str) -> int:
    return bf.main(["--panel", str(paths["panel"]), "--results", str(paths["results"]), "--dataset", "synthetic",
                    "run", *args])


def _report(paths: dict[str, Path], *args: str) -> int:
    return bf.main(["--panel", str(paths["panel"]), "--results", str(paths["results"]), "--dataset", "synthetic",
                    "report", "--benchmarks", str(paths["md"]), "--plot", str(paths["plot"]), *args])


def _lines(path: Path) -> list[dict]:
    return [json.loads(t) for t in path.read_text().splitlines() if t.strip()]


# -- recipes -----------------------------------------------------------------------------------------------------


def test_recipes_meet_the_issue_minimums() -> None:
    ref = bf.RECIPES["reference"]
    assert ref.score_split == "test" and ref.proxy.width_multiplier == 1.0
    assert ref.proxy.resolution >= 64 and ref.proxy.min_stage_map >= 2
    assert ref.proxy.train_size >= 8000 and ref.proxy.epochs >= 3 and ref.proxy.warmup_fraction > 0
    assert bf.RECIPES["default"].proxy == ProxyConfig()
    assert {"default", "r64w050", "more-images", "more-epochs", "naswot", "synflow"} <= set(bf.RECIPES)
    assert all(r.score_split == "val" for r in bf.RECIPES.values() if r.name != "reference")
    assert abs(bf.RECIPES["more-images"].steps - bf.RECIPES["more-epochs"].steps) <= 1
    r64 = bf.RECIPES["r64w050"].proxy
    assert (r64.resolution, r64.min_stage_map, r64.width_multiplier) == (64, 2, 0.5)


def test_recipe_matches_its_recorded_config() -> None:
    r = bf.RECIPES["default"]
    assert r.matches(r.config())
    older = r.config()
    del older["proxy"]["width_multiplier"]  # recorded before a field existed: its default applies
    assert r.matches(older)
    assert not r.matches({**r.config(), "score_split": "test"})
    assert not r.matches({"proxy": {**r.config()["proxy"], "epochs": 2}, "score_split": "val"})
    assert not r.matches({"proxy": {"bogus": 1}}) and not r.matches(None)


def test_unknown_recipe_is_one_error(tiny: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert _run(tiny, "--recipes", "default", "bogus") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown recipe 'bogus'") and err.count("\n") == 1
    assert not tiny["results"].exists()


# -- panel -------------------------------------------------------------------------------------------------------


def test_build_panel_stratifies_by_latency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bf, "size_of", lambda g, res: {"params": sum(g.widths), "macs": 1.0, "size_seconds": 0.0})
    fake = lambda g, res: float(sum(s.depth * s.width for s in g.stages))  # noqa: E731
    panel = bf.build_panel(size=len(zoo) + 3, pool=9, seed=0, latency_fn=fake)
    genomes = panel["genomes"]
    assert len(genomes) == len(zoo) + 3 and set(zoo) < set(genomes)
    assert sorted(n for n in genomes if n.startswith("random-")) == ["random-00", "random-01", "random-02"]
    # the random members sit at the 1/6, 3/6 and 5/6 latency quantiles of the pool
    rnd = sorted(genomes[f"random-{i:02d}"]["latency_ms"] for i in range(3))
    assert rnd[0] < rnd[1] < rnd[2]
    assert genomes["mobilevit_xs"]["latency_resolution"] == 256 and genomes["repvit_m0_9"]["latency_resolution"] == 224
    assert bf.build_panel(size=len(zoo) + 3, pool=9, seed=0, latency_fn=fake)["genomes"].keys() == genomes.keys()
    path = tmp_path / "panel.json"
    bf._write_panel(path, panel)
    loaded = bf.load_panel(path)
    assert [g.name for g in loaded] == list(genomes) and loaded[0].genome.to_dict() == next(iter(genomes.values()))[
        "genome"]
    with pytest.raises(bf.BenchInputError, match="--size"):
        bf.build_panel(size=len(zoo), pool=9, seed=0, latency_fn=fake)


def test_panel_is_not_regenerated_without_force(tiny: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    before = tiny["panel"].read_bytes()
    assert bf.main(["--panel", str(tiny["panel"]), "panel"]) == 0
    assert tiny["panel"].read_bytes() == before and "nothing done" in capsys.readouterr().out


@pytest.mark.parametrize("text, match", [
    ("{not json", "does not parse"),
    ('{"format": 1, "genomes": {}}', "non-empty"),
    ('{"format": 1, "genomes": {"x": {"genome": {"stages": []}}}}', "genome 'x' is malformed"),
    ('[1, 2]', "JSON object"),
])
def test_bad_panel_is_one_error(tiny: dict[str, Path], capsys: pytest.CaptureFixture, text: str, match: str) -> None:
    tiny["panel"].write_text(text)
    assert _run(tiny, "--recipes", "default") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1
    assert _report(tiny) == 2


def test_unknown_genome_is_one_error(tiny: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert _run(tiny, "--genomes", "a", "zzz") == 2
    assert capsys.readouterr().err.startswith("error: unknown genome 'zzz'")


# -- runs --------------------------------------------------------------------------------------------------------


def test_run_resumes_and_skips_what_is_recorded(tiny: dict[str, Path]) -> None:
    assert _run(tiny, "--genomes", "2", "--recipes", "default", "naswot") == 0
    lines = _lines(tiny["results"])
    # seed 0 of every recipe before seed 1; zero-cost first; the first 2 panel genomes only
    assert [(r["seed"], r["recipe"], r["genome"]) for r in lines] == [
        (0, "naswot", "a"), (0, "naswot", "b"), (0, "default", "a"), (0, "default", "b"),
        (1, "naswot", "a"), (1, "naswot", "b"), (1, "default", "a"), (1, "default", "b")]
    rec = lines[2]
    for field in ("accuracy", "loss", "train_loss", "seconds", "loadavg", "machine", "torch", "timm", "config",
                  "genome_key", "threads"):
        assert rec[field] is not None, field
    assert 0 <= rec["accuracy"] <= 1 and rec["score_split"] == "val" and rec["dataset"] == "synthetic"
    assert math.isfinite(lines[0]["score"]) and lines[0]["kind"] == "zero-cost" and "accuracy" not in lines[0]
    before = tiny["results"].read_bytes()
    assert _run(tiny, "--genomes", "2", "--recipes", "default", "naswot") == 0
    assert tiny["results"].read_bytes() == before  # nothing to redo
    assert _run(tiny, "--recipes", "default", "--seeds", "0", "--max-minutes", "0") == 0
    assert tiny["results"].read_bytes() == before  # stopped before the first run
    assert _run(tiny, "--recipes", "reference", "--seeds", "0", "--genomes", "c") == 0
    ref = _lines(tiny["results"])[-1]
    assert (ref["recipe"], ref["genome"], ref["score_split"], ref["steps"]) == ("reference", "c", "test", 8)


def test_malformed_results_line_is_reported_skipped_and_kept(tiny: dict[str, Path],
                                                            capsys: pytest.CaptureFixture) -> None:
    assert _run(tiny, "--recipes", "default", "--seeds", "0", "--genomes", "a") == 0
    good = tiny["results"].read_text()
    cut = '{"genome": "b", "recipe": "default", "seed": 0, "accur'  # an interrupted write: no newline
    tiny["results"].write_text(good + '{"genome": "a"}\n' + cut)
    capsys.readouterr()
    assert _run(tiny, "--recipes", "default", "--seeds", "0", "--genomes", "a", "b") == 2
    err = capsys.readouterr().err
    assert "error: " in err and "2 malformed line(s)" in err and "line 2: missing field `recipe`" in err
    text = tiny["results"].read_text()
    assert text.startswith(good + '{"genome": "a"}\n' + cut + "\n")  # nothing rewritten; the new line starts afresh
    assert [(r["genome"], r["seed"]) for r in _lines_ok(tiny["results"])] == [("a", 0), ("b", 0)]
    assert _report(tiny, "--no-plot") == 2  # the report is written from the good lines, and says what it skipped
    assert "bench_fidelity:begin" in tiny["md"].read_text()


def _lines_ok(path: Path) -> list[dict]:
    records, _ = bf.load_results(path)
    return records


def test_report_on_partial_results(tiny: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert _run(tiny, "--recipes", "default", "reference", "--seeds", "0") == 0
    assert _report(tiny) == 0
    out = capsys.readouterr().out
    assert "0 of 3 genomes have both reference seeds (3 have one)" in out
    assert _report(tiny, "--min-ref-seeds", "1") == 0
    md = tiny["md"].read_text()
    assert "<!-- bench_fidelity:begin -->" in md
    assert "over the 3 genomes with at least 1 reference seed" in md
    assert tiny["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](fidelity/tau.png)" in md  # linked relative to BENCHMARKS.md


# -- report statistics -------------------------------------------------------------------------------------------


def test_rank_statistics() -> None:
    x, y = [1, 2, 3, 4, 5, 6], [2, 1, 3, 4, 6, 5]
    assert bf.kendall(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert math.isnan(bf.kendall([1, 1, 1], [1, 2, 3])) and math.isnan(bf.kendall([1], [1]))
    assert bf.top_k_recall(x, [6, 1, 3, 4, 2, 5], k=3) == pytest.approx(2 / 3)  # top 3: {3, 4, 5} vs {0, 3, 5}
    assert bf.top_k_recall([1, 2], [1, 2], k=5) == 1.0
    # a score that is the confounder itself carries nothing beyond it
    z = [1, 2, 3, 4, 5, 6]
    assert math.isnan(bf.partial_kendall(z, y, z))
    t_xy, t_xz, t_yz = bf.kendall(x, y), bf.kendall(x, [3, 1, 2, 6, 4, 5]), bf.kendall(y, [3, 1, 2, 6, 4, 5])
    assert bf.partial_kendall(x, y, [3, 1, 2, 6, 4, 5]) == pytest.approx(
        (t_xy - t_xz * t_yz) / math.sqrt((1 - t_xz ** 2) * (1 - t_yz ** 2)))
    # terciles by latency: perfect agreement inside each third, whatever happens across thirds
    lat = [1, 2, 3, 4, 5, 6]
    assert bf.tercile_kendall([2, 1, 4, 3, 6, 5], [2, 1, 4, 3, 6, 5], lat) == 1.0
    assert bf.tercile_kendall([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1], lat) == -1.0


def test_bootstrap_interval_brackets_tau() -> None:
    rng = np.random.default_rng(1)
    truth = np.arange(20.0)
    x, y = truth + rng.normal(0, 3, 20), truth + rng.normal(0, 3, 20)
    lo, hi = bf.bootstrap_interval(x, y, n=500)
    assert lo < bf.kendall(x, y) < hi and (lo, hi) == bf.bootstrap_interval(x, y, n=500)
    assert all(math.isnan(v) for v in bf.bootstrap_interval([1, 2], [1, 2]))
    # the vectorised resample tau is scipy's tau-b, ties and repeated genomes included
    idx = np.array([0, 0, 3, 5, 5, 5, 7, 9, 9, 12, 15, 19])
    xr, yr = np.round(x)[idx], np.round(y)[idx]
    sx, sy = np.sign(xr[:, None] - xr[None, :]), np.sign(yr[:, None] - yr[None, :])
    fast = (sx * sy).sum() / math.sqrt((sx * sx).sum() * (sy * sy).sum())
    assert fast == pytest.approx(kendalltau(xr, yr).statistic)


def test_tau_difference_interval_is_paired_and_carries_the_reference_noise() -> None:
    rng = np.random.default_rng(2)
    truth = np.arange(16.0)
    exact = [[t, t] for t in truth]
    noisy = truth + rng.normal(0, 4, 16)
    assert bf.tau_difference_interval(noisy, noisy, exact, n=300) == (0.0, 0.0)  # same score: no difference
    lo, hi = bf.tau_difference_interval(truth, truth[::-1], exact, n=300)
    assert lo == hi == pytest.approx(2.0)  # tau 1 minus tau -1 on every resample
    lo, hi = bf.tau_difference_interval(truth, noisy, exact, n=300)
    assert 0 < lo < 1 - bf.kendall(noisy, truth) < hi
    # reference seeds that disagree widen the interval of the same two scores
    wobbly = [[t + 3, t - 3] for t in truth]
    lo2, hi2 = bf.tau_difference_interval(truth, noisy, wobbly, n=300)
    assert hi2 - lo2 > hi - lo
    assert all(math.isnan(v) for v in bf.tau_difference_interval([1, 2], [2, 1], [[1], [2]]))


def test_choose_default_takes_the_cheapest_variant_within_noise_of_the_best(monkeypatch: pytest.MonkeyPatch) -> None:
    recipes = {n: bf.Recipe(n, "train", n, proxy=TINY_PROXY) for n in ("cheap", "mid", "dear")}
    monkeypatch.setattr(bf, "RECIPES", {**TINY_RECIPES, **recipes})
    rng = np.random.default_rng(3)
    names = [f"g{i}" for i in range(14)]
    truth = np.arange(14.0)
    panel = {n: bf.PanelGenome(name=n, genome=None, key=n, source="random", latency_ms=1.0 + i, params=i + 1,
                               macs=float((5 * i) % 14), size_seconds=0.0) for i, n in enumerate(names)}
    ref_values = {n: {0: t + d, 1: t - d} for n, t, d in zip(names, truth, rng.normal(0, 1.0, 14))}
    ref = {n: t for n, t in zip(names, truth)}  # the seed mean
    scored = {"cheap": (truth[::-1] + rng.normal(0, 1, 14), 10.0), "mid": (truth + rng.normal(0, 0.5, 14), 20.0),
              "dear": (truth, 40.0)}
    rows = [bf._row(f"{r} accuracy", r, "accuracy", "seed 0", dict(zip(names, v)), ref, panel, sec)
            for r, (v, sec) in scored.items()]
    rows.append(bf._row("mid val loss", "mid", "loss", "seed 0", dict(zip(names, truth)), ref, panel, 20.0))
    rows.append(bf._row("partial", "cheap", "accuracy", "2 seeds", {n: 1.0 * i for i, n in enumerate(names[:9])}, ref,
                        panel, 5.0))  # not on every genome: never a candidate
    c = bf.choose_default(rows[:3], ref_values, ref)
    assert c["best"]["recipe"] == "dear" and c["chosen"]["recipe"] == "mid"
    verdicts = {r["recipe"]: lo for r, (lo, _) in c["verdicts"]}
    assert verdicts["cheap"] > 0 >= verdicts["mid"] and set(verdicts) == {"cheap", "mid"}
    assert c["accuracy_gap"][0] < 0 <= c["accuracy_gap"][1]  # "mid" minus "dear": within noise
    # every score of a trained recipe competes: the loss as cheap as "mid" and as good as "dear" wins
    c = bf.choose_default(rows, ref_values, ref)
    assert c["best"]["recipe"] == "dear"  # tau 1 like the loss row: the first of the table wins the tie
    assert (c["chosen"]["recipe"], c["chosen"]["field"]) == ("mid", "loss")
    assert bf.choose_default(rows[4:], ref_values, ref) is None  # the partial row alone


def _fake_records() -> tuple[list[bf.PanelGenome], list[dict]]:
    rng = np.random.default_rng(0)
    panel = [bf.PanelGenome(name=f"g{i}", genome=None, key=f"k{i}", source="random", latency_ms=1.0 + i,
                            params=1000 * (i + 1), macs=float(1e6 * ((i * 7) % 12)), size_seconds=0.01)
             for i in range(12)]
    truth = np.linspace(0.80, 0.86, 12)
    records = []
    for i, g in enumerate(panel):
        for seed in (0, 1):
            base = {"genome": g.name, "seed": seed, "config": {}, "threads": 1, "loadavg": [0.5 + 3 * seed, 0, 0]}
            ref = truth[i] + rng.normal(0, 0.002)
            records.append({**base, "recipe": "reference", "kind": "train", "accuracy": ref, "seconds": 100.0})
            if not (i == 11 and seed == 1):  # one proxy seed missing
                records.append({**base, "recipe": "default", "kind": "train", "accuracy": truth[11 - i],
                                "loss": 1 - truth[i], "train_loss": 1.0, "seconds": 10.0 + seed})
            records.append({**base, "recipe": "naswot", "kind": "zero-cost", "score": float(i), "seconds": 1.0})
    return panel, records


def test_analyse_on_a_fake_results_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bf, "RECIPES", TINY_RECIPES)
    panel, records = _fake_records()
    a = bf.analyse(panel, records)
    assert a["ref_both"] == 12 and len(a["ref"]) == 12
    assert a["ceiling"]["n"] == 12 and a["ceiling"]["tau"] > 0.8 and a["ceiling"]["sd"] < 0.005
    rows = {(r["label"], r["seeds"]): r for r in a["rows"]}
    assert rows[("default accuracy", "seed 0")]["tau"] == pytest.approx(-1.0, abs=0.2)  # reversed on purpose
    assert rows[("default val loss", "seed 0")]["tau"] > 0.8  # lower loss = better, sign flipped
    assert rows[("default accuracy", "2 seeds")]["n"] == 11  # g11 lacks seed 1
    assert math.isnan(rows[("default train loss", "seed 0")]["tau"])  # constant score
    assert rows[("naswot", "seed 0")]["recall"] == 1.0
    assert math.isnan(rows[("MACs", "-")]["partial"])
    # seconds: the quiet runs only (seed 0 started at load 0.5 <= 1 thread + 0.5; seed 1 at 3.5)
    assert rows[("default accuracy", "seed 0")]["seconds"] == 10.0
    assert rows[("default accuracy", "2 seeds")]["seconds"] == 20.0
    assert a["goal"] == pytest.approx(min(0.6, 0.8 * a["ceiling"]["tau"]))
    partial = [r for r in records if not (r["recipe"] == "reference" and r["seed"] == 1 and r["genome"] != "g0")]
    b = bf.analyse(panel, partial)
    assert (b["ref_both"], b["ref_counts"][1], len(b["ref"])) == (1, 11, 1)
    lines = bf.render(b, panel, partial, ignored={"unknown recipe 'x'": 2}, plot_link=None, command="c")
    text = "\n".join(lines)
    assert "1 of 12 genomes have both reference seeds (11 have one)" in text and "2 (unknown recipe 'x')" in text
    # the validation loss ranks (the reversed accuracy does not); zero-cost rows never compete
    assert a["choice"]["chosen"]["label"] == "default val loss" and a["choice"]["chosen"]["seeds"] == "seed 0"
    text = "\n".join(bf.render(a, panel, records, ignored={}, plot_link=None, command="c"))
    assert "**Chosen: default val loss (seed 0)**" in text and "Goal (tau >= " in text
    assert "The best accuracy score is default accuracy (seed 0)" in text and "better beyond noise" in text
    assert "resampling the genomes and each genome's reference seeds" in text
    # one reference seed per genome: the text says the reference's noise is missing from the intervals
    single = [r for r in records if not (r["recipe"] == "reference" and r["seed"] == 1)]
    c = bf.analyse(panel, single, min_ref_seeds=1)
    assert "the reference's own noise is not in it" in "\n".join(bf._choice_lines(c))
    assert "No choice yet" in "\n".join(bf._choice_lines(bf.analyse(panel, single)))


def test_two_runs_never_share_a_results_file(tiny: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    with bf._exclusive(tiny["results"]):
        assert _run(tiny, "--recipes", "naswot") == 2
    assert "another `run` is writing to it" in capsys.readouterr().err
    assert tiny["results"].read_text() == ""


def test_the_search_default_rungs_map_onto_recipes_and_rows() -> None:
    """The report says what the plain search ranks: each CPU rung is a recipe of the table, trained identically."""
    from nas import SearchConfig
    from nas._config import PROXY_SCORES

    cfg = SearchConfig().for_train_device("cpu")
    field = bf.SEARCH_SCORE_FIELD[cfg.score]
    rows = [{"recipe": "default-2k", "field": field, "seeds": "2 seeds", "label": "default-2k x", "tau": 0.5,
             "interval": (0.3, 0.7), "n": 24, "seconds": 30.0},
            {"recipe": "default-2k", "field": field, "seeds": "seed 0", "label": "default-2k x", "tau": 0.1,
             "interval": (0.0, 0.2), "n": 24, "seconds": 15.0}]
    got = bf.search_default_rows(rows)
    assert [r.images for r, _, _ in got] == list(cfg.rungs)
    assert [name for _, name, _ in got] == ["default-667", "default-2k"]  # trained exactly as the rungs train
    assert got[0][2] is None and got[1][2] is rows[0]  # the top rung averages two seeds
    text = "\n".join(bf._search_default_lines(rows))
    assert "`default-667`, not measured yet" in text and "tau 0.50 [0.30, 0.70] on 24 genomes" in text
    assert set(bf.SEARCH_SCORE_FIELD) == set(PROXY_SCORES)
