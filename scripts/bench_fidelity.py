"""Proxy fidelity: how well each cheap proxy ranks a panel of genomes against a strong reference training.

    python scripts/bench_fidelity.py panel [--size 24] [--pool 120] [--seed 0] [--force]
    python scripts/bench_fidelity.py run [--recipes NAME ...] [--seeds 0 1] [--genomes N | NAME ...]
                                         [--max-minutes M] [--train-device cpu|cuda] [--threads N]
    python scripts/bench_fidelity.py report [--min-ref-seeds 2] [--no-write]
    python scripts/bench_fidelity.py recipes

``panel`` writes ``benchmarks/fidelity/panel.json``: the 7 zoo models plus random genomes of the default
``SearchSpace`` (resolution 224, fixed seed), picked evenly across the predicted iphone12 latency quantiles of a
larger random pool, each with its latency, deployed parameter count and MACs. Later runs read that file and never
regenerate it (``panel --force`` does; results recorded for a genome whose key changed are then ignored).

``run`` trains every (recipe, genome, seed) not yet recorded and appends one JSON line per result to
``benchmarks/fidelity/results.jsonl`` (all genomes of seed 0 before seed 1, so a partial run is useful; a rerun
skips what is recorded). Recipes live in ``RECIPES``: the ``reference`` training (every stage of every panel
genome sees at least a 2x2 map, full width, scored on the complete official test set: the only place in the
project that touches it), the proxy variants (scored on the validation hold-out from the training set, as the
search scores) and the zero-cost scores. ``--max-minutes`` stops cleanly after the run in progress.

``report`` reads both files (partial results too), writes the ``bench_fidelity`` section of BENCHMARKS.md and
``benchmarks/fidelity/tau_vs_cost.png``: the reference's noise ceiling, and per proxy and score the Kendall tau
against the reference mean with a bootstrap 90% interval, tau within predicted-latency terciles, partial tau
given MACs, top-5 recall and seconds per candidate; then the default proxy this table supports: the
cheapest trained variant whose tau is within noise of the best (a paired bootstrap over genomes and reference
seeds), with the reason.

Bad input (an unknown recipe or genome name, a panel file that does not parse) stops with one ``error:`` line and
exit code 2. A malformed results line is reported, skipped and left as it is (the file is only ever appended to);
the command still does its work and then exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nas import ProxyConfig  # noqa: E402
from nas._config import PROXY_SCORES  # noqa: E402
from scripts._common import ROOT, append_jsonl, machine, read_jsonl, update_section  # noqa: E402

_logger = logging.getLogger("bench_fidelity")

OUT_DIR = ROOT / "benchmarks" / "fidelity"
SECTION = "bench_fidelity"
PANEL_FORMAT = 1
#: Latency device the panel is stratified on, and the classes its parameter counts and MACs are computed for.
PANEL_DEVICE = "iphone12"
PANEL_CLASSES = 10
PANEL_RESOLUTION = 224
#: A run counts as "quiet" (its seconds are representative) if the 1-minute load average at its start was at
#: most the threads it used plus this margin.
QUIET_MARGIN = 0.5
GOAL_SECONDS = 30.0
BOOTSTRAP = 2000
TOP_K = 5
#: Rows on fewer genomes are tabled but neither plotted nor checked against the goal.
MIN_GENOMES = 5


class BenchInputError(Exception):
    """Bad input (recipe or genome name, panel file): reported as one ``error:`` line, exit code 2."""


# -- recipes ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """One way of scoring a genome.

    Attributes:
        name: Key in :data:`RECIPES` and the ``recipe`` field of result lines.
        kind: ``train`` (``nas.train_proxy`` with ``proxy``) or ``zero-cost`` (``nas.zero_cost_score``).
        summary: One line for the report.
        proxy: Training recipe (``train`` only).
        score_split: ``val`` (the search's hold-out) or ``test`` (the official test set: the reference only).
        method: Zero-cost method (``zero-cost`` only).
        resolution: Zero-cost input resolution (``zero-cost`` only; the search uses the proxy's 32 px).
    """

    name: str
    kind: str
    summary: str
    proxy: ProxyConfig | None = None
    score_split: str = "val"
    method: str | None = None
    resolution: int = 32

    def config(self) -> dict[str, Any]:
        """JSON-able settings recorded with each result; a result counts only if they still match."""
        if self.kind == "train":
            return {"proxy": self.proxy.to_dict(), "score_split": self.score_split}
        return {"method": self.method, "resolution": self.resolution}

    def matches(self, recorded: Any) -> bool:
        """Whether ``recorded`` (a result's ``config``) describes this recipe (new ProxyConfig defaults allowed)."""
        if not isinstance(recorded, Mapping):
            return False
        if self.kind != "train":
            return dict(recorded) == self.config()
        try:
            proxy = ProxyConfig.from_dict(recorded.get("proxy", {}))
        except Exception:  # noqa: BLE001 - any unreadable config is simply another recipe
            return False
        return proxy == self.proxy and recorded.get("score_split") == self.score_split

    @property
    def steps(self) -> int | None:
        """Optimizer steps of one run on Fashion-MNIST-sized data (``None`` for zero-cost)."""
        if self.proxy is None:
            return None
        return self.proxy.epochs * (self.proxy.train_size // self.proxy.batch_size)


#: The proxy recipe every variant starts from: the search's ``ProxyConfig()`` when the panel was first trained,
#: spelled out so that a later change of the search's defaults never changes (and so never orphans) a recipe.
_BASE = dict(epochs=1, resolution=32, batch_size=64, lr=3e-3, weight_decay=0.05, warmup_fraction=0.1,
             train_size=4000, val_size=2000, label_smoothing=0.1, bn_recalibration=512, grad_clip=5.0,
             hopeless_after=0.25, hopeless_margin=0.05, hopeless_min_steps=16, check_size=500, diverge_factor=10.0,
             diverge_patience=5, max_seconds=None, width_multiplier=1.0, min_stage_map=None)
#: 64 px with ``min_stage_map=2`` lets every stage of a stride-32 network see a 2x2 map, and the 0.5 width keeps
#: its cost near the 32 px recipe.
_R64W050 = dict(_BASE, resolution=64, min_stage_map=2, width_multiplier=0.5)

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("naswot", "zero-cost", "NASWOT (zero-cost), 64 images at 32 px", method="naswot"),
    Recipe("synflow", "zero-cost", "synflow (zero-cost), 32 px", method="synflow"),
    Recipe("default", "train", "the search's first proxy: 32 px, 4,000 images x 1 epoch (62 steps)",
           proxy=ProxyConfig(**_BASE)),
    Recipe("default-667", "train", "as default with 667 images (10 steps; the search's cheapest CPU rung)",
           proxy=ProxyConfig(**{**_BASE, "train_size": 667})),
    Recipe("default-2k", "train", "as default with 2,000 images (31 steps; the search's top CPU rung)",
           proxy=ProxyConfig(**{**_BASE, "train_size": 2000})),
    Recipe("r64w050", "train", "64 px (every stage >= 2x2), width x0.5, 4,000 images x 1 epoch (62 steps)",
           proxy=ProxyConfig(**_R64W050)),
    Recipe("more-images", "train", "as r64w050 with 8,000 images x 1 epoch (125 steps)",
           proxy=ProxyConfig(**{**_R64W050, "train_size": 8000})),
    Recipe("more-epochs", "train", "as r64w050 with 4,000 images x 2 epochs (124 steps: more-images' budget)",
           proxy=ProxyConfig(**{**_R64W050, "epochs": 2})),
    Recipe("reference", "train",
           "64 px (every stage of every panel genome >= 2x2), full width, 8,000 images x 3 epochs (375 steps), "
           "warm-up + cosine, scored on the official test set (10,000 images)",
           proxy=ProxyConfig(**{**_BASE, "epochs": 3, "train_size": 8000, "min_stage_map": 2, "resolution": 64,
                                 "hopeless_after": None}),
           score_split="test"),
)}
REFERENCE = "reference"
#: Scores of a trained recipe: (result field, sign making higher better, label).
TRAIN_SCORES = (("accuracy", 1.0, "accuracy"), ("loss", -1.0, "val loss"), ("train_loss", -1.0, "train loss"))
SEARCH_SCORE_FIELD = dict(zip(PROXY_SCORES, ("accuracy", "loss"), strict=True))
"""The result field of each ``nas.search --proxy-score`` (what the search's default ranks by, in this table)."""


def pick_recipes(names: Sequence[str] | None) -> list[Recipe]:
    """The recipes named (all by default), in :data:`RECIPES` order; an unknown name is a :class:`BenchInputError`."""
    if not names:
        return list(RECIPES.values())
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise BenchInputError(f"unknown recipe {unknown[0]!r}; known recipes: {', '.join(RECIPES)}")
    return [r for r in RECIPES.values() if r.name in names]


# -- panel -----------------------------------------------------------------------------------------------------


def _latency(genome, resolution: int, db) -> float:
    from latency_lut import predict_latency

    return float(predict_latency(genome, PANEL_DEVICE, resolution, db=db))


def _latency_resolution(genome) -> int:
    """The resolution the search prices a genome at: 224, or its own where it cannot run there (MobileViT)."""
    from search_space import InvalidGenomeError

    try:
        genome.with_resolution(PANEL_RESOLUTION)
    except InvalidGenomeError:
        return genome.resolution
    return PANEL_RESOLUTION


def size_of(genome, resolution: int) -> dict[str, Any]:
    """Deployed parameter count and MACs (at ``resolution``) for ``PANEL_CLASSES`` classes, and the seconds taken."""
    import torch

    from nas._zerocost import _macs
    from search_space import build_model, reparameterize

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = reparameterize(build_model(genome, num_classes=PANEL_CLASSES).eval())
    params = sum(p.numel() for p in model.parameters())
    macs = _macs(model, resolution)
    return {"params": int(params), "macs": float(macs), "size_seconds": round(time.perf_counter() - t0, 3)}


def _pick_by_latency(pool: list[tuple[float, Any]], n: int) -> list[tuple[float, Any]]:
    """``n`` members of ``pool`` at evenly spaced latency quantiles (the middle of ``n`` equal-count bins)."""
    ranked = sorted(pool, key=lambda p: p[0])
    idx = sorted({min(len(ranked) - 1, int((i + 0.5) * len(ranked) / n)) for i in range(n)})
    return [ranked[i] for i in idx]


def build_panel(*, size: int, pool: int, seed: int, latency_fn: Callable | None = None) -> dict[str, Any]:
    """The panel: the zoo plus ``size - len(zoo)`` random genomes stratified by predicted latency.

    ``pool`` distinct genomes are drawn from ``SearchSpace()`` with ``seed`` and priced on ``PANEL_DEVICE``; the
    random members sit at evenly spaced latency quantiles of the pool. The run order is a seeded shuffle, so that
    the first genomes of a partial run already span zoo and random genomes and the latency range.
    """
    from latency_lut import LatencyTable
    from search_space import SearchSpace, zoo

    n_random = size - len(zoo)
    if n_random < 1 or pool < n_random:
        raise BenchInputError(f"--size must exceed the {len(zoo)} zoo models and --pool must be >= --size - "
                              f"{len(zoo)}, got --size {size} --pool {pool}")
    rng = np.random.default_rng(seed)
    space = SearchSpace(resolution=PANEL_RESOLUTION)
    with tempfile.TemporaryDirectory() as tmp:
        db = LatencyTable(Path(tmp) / "lut.db")
        price = latency_fn or (lambda g, res: _latency(g, res, db))
        seen = {g.key() for g in zoo.values()}
        drawn: list[tuple[float, Any]] = []
        while len(drawn) < pool:
            g = space.sample(rng)
            if g.key() in seen:
                continue
            seen.add(g.key())
            drawn.append((price(g, PANEL_RESOLUTION), g))
            _logger.info("pool %d/%d: %.3f ms", len(drawn), pool, drawn[-1][0])
        members = [(name, "zoo", g, price(g, _latency_resolution(g))) for name, g in sorted(zoo.items())]
    picked = _pick_by_latency(drawn, n_random)
    members += [(f"random-{i:02d}", "random", g, lat) for i, (lat, g) in enumerate(picked)]
    order = rng.permutation(len(members))
    genomes: dict[str, Any] = {}
    for i in order:
        name, source, g, lat = members[i]
        res = _latency_resolution(g)
        genomes[name] = {"source": source, "key": g.key(), "latency_ms": round(lat, 5), "latency_resolution": res,
                         **size_of(g, res), "genome": g.to_dict()}
    return {
        "format": PANEL_FORMAT, "seed": seed, "pool": pool, "size": len(genomes),
        "space": f"SearchSpace() at resolution {PANEL_RESOLUTION}",
        "latency": f"{PANEL_DEVICE} (predicted), ms, at latency_resolution (224; a genome's own where it cannot "
                   "run at 224)",
        "size_of": f"deployed network with {PANEL_CLASSES} classes: params, MACs at latency_resolution",
        "created": _now(), "genomes": genomes,
    }


@dataclass(frozen=True)
class PanelGenome:
    name: str
    genome: Any
    key: str
    source: str
    latency_ms: float
    params: int
    macs: float
    size_seconds: float


def load_panel(path: Path) -> list[PanelGenome]:
    """The panel's genomes in run order; a file that does not parse is a :class:`BenchInputError`."""
    from search_space import Genome, InvalidGenomeError

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchInputError(f"{path}: no panel file (create it with `python scripts/bench_fidelity.py panel`)") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchInputError(f"{path}: the panel file does not parse: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("genomes"), dict) or not data["genomes"]:
        raise BenchInputError(f"{path}: expected a JSON object with a non-empty `genomes` object")
    if data.get("format") != PANEL_FORMAT:
        raise BenchInputError(f"{path}: panel format {data.get('format')!r}, expected {PANEL_FORMAT}")
    out = []
    for name, entry in data["genomes"].items():
        try:
            genome = Genome.from_dict(entry["genome"])
            item = PanelGenome(name=name, genome=genome, key=genome.key(), source=str(entry["source"]),
                               latency_ms=_finite(entry["latency_ms"]), params=int(entry["params"]),
                               macs=_finite(entry["macs"]), size_seconds=_finite(entry.get("size_seconds", 0.0)))
        except (KeyError, TypeError, ValueError, InvalidGenomeError) as e:
            raise BenchInputError(f"{path}: genome {name!r} is malformed: {type(e).__name__}: {e}") from None
        if entry.get("key") not in (None, item.key):
            raise BenchInputError(f"{path}: genome {name!r}: stored key {entry.get('key')!r} is not its genome's "
                                  f"key {item.key} (edited by hand?)")
        out.append(item)
    return out


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def pick_genomes(panel: list[PanelGenome], selection: Sequence[str] | None) -> list[PanelGenome]:
    """All of the panel, its first N (``["N"]``), or the genomes named; an unknown name is a BenchInputError."""
    if not selection:
        return panel
    if len(selection) == 1 and selection[0].isdigit():
        return panel[:int(selection[0])]
    names = {g.name for g in panel}
    unknown = [s for s in selection if s not in names]
    if unknown:
        raise BenchInputError(f"unknown genome {unknown[0]!r}; the panel has {', '.join(sorted(names))}")
    return [g for g in panel if g.name in selection]


# -- results ---------------------------------------------------------------------------------------------------


_REQUIRED = {"genome": str, "recipe": str, "seed": int, "config": dict, "seconds": (int, float)}


def _problem(rec: dict) -> str | None:
    """Why a results line is malformed, or None."""
    for field, kind in _REQUIRED.items():
        if field not in rec:
            return f"missing field `{field}`"
        if isinstance(rec[field], bool) or not isinstance(rec[field], kind):
            return f"`{field}` has the wrong type ({type(rec[field]).__name__})"
    if rec["seed"] < 0:
        return "`seed` is negative"
    if rec.get("kind", "train") not in ("train", "zero-cost"):
        return f"unknown `kind` {rec.get('kind')!r}"
    if rec.get("error") is None:
        field = "score" if rec.get("kind") == "zero-cost" else "accuracy"
        value = rec.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"no finite `{field}` and no `error`"
        if field == "accuracy" and not 0.0 <= value <= 1.0:
            return f"`accuracy` {value} is outside 0..1"
    return None


def load_results(path: Path) -> tuple[list[dict], list[str]]:
    """Well-formed results lines, and one message per malformed line (which is skipped, never rewritten)."""
    rows, problems = read_jsonl(path)
    good = []
    for number, rec in rows:
        why = _problem(rec)
        if why:
            problems.append(f"line {number}: {why}")
        else:
            good.append(rec)
    return good, problems


def _report_problems(path: Path, problems: list[str]) -> None:
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else "")
        print(f"error: {path}: {len(problems)} malformed line(s) skipped (left as they are): {shown}",
              file=sys.stderr)


def usable(records: Iterable[dict], panel: list[PanelGenome], *, dataset: str) -> tuple[list[dict], dict[str, int]]:
    """Results that belong to this panel, a known recipe's current settings and ``dataset``; why others are not."""
    keys = {g.name: g.key for g in panel}
    out, ignored = [], {}
    for rec in records:
        recipe = RECIPES.get(rec["recipe"])
        why = None
        if recipe is None:
            why = f"unknown recipe {rec['recipe']!r}"
        elif keys.get(rec["genome"]) is None:
            why = "genome not in the panel"
        elif rec.get("genome_key", keys[rec["genome"]]) != keys[rec["genome"]]:
            why = "genome changed in the panel"
        elif not recipe.matches(rec["config"]):
            why = f"recipe {recipe.name!r} recorded with other settings"
        elif rec.get("dataset", dataset) != dataset:
            why = f"dataset {rec.get('dataset')!r}"
        if why:
            ignored[why] = ignored.get(why, 0) + 1
        else:
            out.append(rec)
    return out, ignored


def plan(recipes: list[Recipe], genomes: list[PanelGenome], seeds: Sequence[int],
         done: set[tuple[str, str, int]]) -> list[tuple[Recipe, PanelGenome, int]]:
    """Runs still to do: seed by seed, cheap recipes first (zero-cost, proxies, then the reference), panel order."""
    ordered = sorted(recipes, key=lambda r: (r.kind != "zero-cost", r.name == REFERENCE))
    return [(r, g, s) for s in seeds for r in ordered for g in genomes if (g.name, r.name, s) not in done]


def run_one(recipe: Recipe, item: PanelGenome, seed: int, data, *, device: str) -> dict[str, Any]:
    """Score one genome with one recipe and seed; the JSON-able result line (``error`` set if training failed)."""
    import torch

    from nas import NASError, ProxyTrainingError, train_proxy, zero_cost_score

    rec: dict[str, Any] = {"genome": item.name, "genome_key": item.key, "recipe": recipe.name, "seed": seed,
                           "kind": recipe.kind, "dataset": data.name, "loadavg": _loadavg(),
                           "threads": torch.get_num_threads(), "train_device": device if recipe.kind == "train"
                           else "cpu", "time": _now()}
    t0 = time.perf_counter()
    if recipe.kind == "zero-cost":
        try:
            rec["score"] = zero_cost_score(item.genome, data, method=recipe.method, resolution=recipe.resolution,
                                           seed=seed)
        except NASError as e:  # e.g. no synflow signal reaches the output
            rec.update(error=f"failed: {e}", score=None)
    else:
        try:
            r = train_proxy(item.genome, data, config=recipe.proxy, device=device, seed=seed,
                            score_split=recipe.score_split)
        except ProxyTrainingError as e:
            rec.update(error=f"{e.reason}: {e}", accuracy=None)
        else:
            rec.update(accuracy=r.accuracy, loss=r.loss, train_loss=r.train_loss, resolution=r.resolution,
                       steps=r.steps, epochs_run=r.epochs_run, stopped_early=r.stopped_early,
                       stop_reason=r.stop_reason, num_params=r.num_params, score_split=r.score_split)
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    rec["loadavg_end"] = _loadavg()
    rec.update(machine=_machine(), torch=torch.__version__, timm=_timm_version(), config=recipe.config())
    if rec["train_device"].startswith("cuda"):
        rec["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return rec


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


_MACHINE: list[str] = []


def _machine() -> str:
    if not _MACHINE:
        _MACHINE.append(machine())
    return _MACHINE[0]


def _timm_version() -> str:
    import timm

    return timm.__version__


# -- report math -----------------------------------------------------------------------------------------------


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall tau-b of ``x`` and ``y`` (NaN when undefined: fewer than 2 points or a constant side)."""
    from scipy.stats import kendalltau

    if len(x) < 2:
        return float("nan")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(kendalltau(x, y).statistic)


def _taus(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of every row pair of ``x`` and ``y`` (shape ``(resamples, genomes)``), NaN where undefined.

    From the pairwise sign matrices (``sum(sx * sy) / sqrt(sum(sx^2) * sum(sy^2))``), which is what
    ``scipy.stats.kendalltau`` computes, ties and repeated genomes included.
    """
    sx, sy = np.sign(x[:, :, None] - x[:, None, :]), np.sign(y[:, :, None] - y[:, None, :])
    den = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(axis=(1, 2)) / den, np.nan)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_interval(x: Sequence[float], y: Sequence[float], *, n: int = BOOTSTRAP, level: float = 0.9,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of Kendall tau over ``n`` resamples of the genomes (with replacement)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(x), (n, len(x)))
    return _percentiles(_taus(x[idx], y[idx]), level)


def tau_difference_interval(a: Sequence[float], b: Sequence[float], ref_seeds: Sequence[Sequence[float]], *,
                            n: int = BOOTSTRAP, level: float = 0.9, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``tau(a, ref) - tau(b, ref)``: how far apart two scores' rankings are, beyond noise.

    Each resample draws the genomes with replacement (the panel's sampling noise) and, for each drawn genome, its
    reference seeds with replacement (the reference's own noise); ``ref`` is the mean of the drawn seeds. ``a``
    and ``b`` are scored on the same resample (a paired comparison). Two copies of one genome in a resample draw
    their reference seeds independently, so they tie on the scores but not always on the reference (which pulls
    both taus slightly towards 0, the same for ``a`` and ``b``).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    g = len(a)
    if g < 3:
        return float("nan"), float("nan")
    k = np.array([len(s) for s in ref_seeds])
    values = np.full((g, int(k.max())), np.nan)
    for i, s in enumerate(ref_seeds):
        values[i, :len(s)] = s
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, g, (n, g))
    kk = k[idx][..., None]
    picks = np.floor(rng.random((n, g, values.shape[1])) * kk).astype(int)
    drawn = values[idx[..., None], picks]
    ref = np.where(np.arange(values.shape[1]) < kk, drawn, 0.0).sum(axis=-1) / kk[..., 0]
    return _percentiles(_taus(a[idx], ref) - _taus(b[idx], ref), level)


def partial_kendall(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """Kendall's partial tau of ``x`` and ``y`` given ``z``: what ``x`` says about ``y`` beyond ``z``."""
    txy, txz, tyz = kendall(x, y), kendall(x, z), kendall(y, z)
    denominator = (1 - txz ** 2) * (1 - tyz ** 2)
    if any(math.isnan(t) for t in (txy, txz, tyz)) or denominator <= 1e-12:
        return float("nan")
    return (txy - txz * tyz) / math.sqrt(denominator)


def tercile_kendall(x: Sequence[float], y: Sequence[float], latency: Sequence[float]) -> float:
    """Mean Kendall tau within the three latency terciles (genomes split by latency rank); NaN if none defined."""
    order = np.argsort(np.asarray(latency, dtype=float), kind="stable")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    taus = [kendall(x[part], y[part]) for part in np.array_split(order, 3)]
    taus = [t for t in taus if not math.isnan(t)]
    return float(np.mean(taus)) if taus else float("nan")


def top_k_recall(x: Sequence[float], y: Sequence[float], k: int = TOP_K) -> float:
    """Share of ``y``'s top ``k`` that are in ``x``'s top ``k`` (``k`` capped at the number of genomes)."""
    k = min(k, len(x))
    if k == 0:
        return float("nan")
    top = lambda v: set(np.argsort(-np.asarray(v, dtype=float), kind="stable")[:k].tolist())  # noqa: E731
    return len(top(x) & top(y)) / k


# -- report ----------------------------------------------------------------------------------------------------


def _value(rec: dict, field: str) -> float | None:
    v = rec.get("score" if rec.get("kind") == "zero-cost" else field)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _by_genome(records: list[dict], recipe: str, field: str) -> dict[str, dict[int, float]]:
    """``genome -> seed -> value`` of one recipe's field (the first line of each key wins)."""
    out: dict[str, dict[int, float]] = {}
    for rec in records:
        if rec["recipe"] != recipe or rec.get("error") is not None:
            continue
        v = _value(rec, field)
        if v is not None:
            out.setdefault(rec["genome"], {}).setdefault(rec["seed"], v)
    return out


def _quiet(rec: dict) -> bool:
    load, threads = rec.get("loadavg"), rec.get("threads")
    return bool(load) and isinstance(threads, int) and load[0] <= threads + QUIET_MARGIN


def seconds_per_run(records: list[dict], recipe: str) -> dict[str, Any]:
    """Median seconds of a recipe's runs: of the quiet ones where there are some, else of all."""
    runs = [r for r in records if r["recipe"] == recipe and r.get("error") is None]
    quiet = [r for r in runs if _quiet(r)]
    use = quiet or runs
    return {"median": float(np.median([r["seconds"] for r in use])) if use else float("nan"),
            "n": len(use), "of": len(runs), "quiet": bool(quiet)}


def _seed_stats(values: dict[str, dict[int, float]]) -> dict[str, Any]:
    """Mean per-genome seed SD (ddof 1) and the seed-0-vs-seed-1 tau, over genomes with both seeds."""
    both = sorted(g for g, s in values.items() if 0 in s and 1 in s)
    sds = [float(np.std(list(values[g].values()), ddof=1)) for g in values if len(values[g]) >= 2]
    x, y = [values[g][0] for g in both], [values[g][1] for g in both]
    return {"sd": float(np.mean(sds)) if sds else float("nan"), "n_sd": len(sds), "tau": kendall(x, y),
            "interval": bootstrap_interval(x, y), "n": len(both)}


def _row(label: str, recipe: str, field: str, seeds: str, scores: dict[str, float], ref: dict[str, float],
         panel: dict[str, PanelGenome], seconds: float) -> dict[str, Any]:
    names = sorted(set(scores) & set(ref))
    x, y = [scores[n] for n in names], [ref[n] for n in names]
    lat, macs = [panel[n].latency_ms for n in names], [panel[n].macs for n in names]
    return {"label": label, "recipe": recipe, "field": field, "seeds": seeds, "n": len(names),
            "tau": kendall(x, y), "interval": bootstrap_interval(x, y), "tercile": tercile_kendall(x, y, lat),
            "partial": partial_kendall(x, y, macs), "recall": top_k_recall(x, y), "seconds": seconds,
            "scores": {n: scores[n] for n in names}}


def choose_default(rows: list[dict], ref_values: dict[str, dict[int, float]], ref: dict[str, float]) -> dict | None:
    """The default proxy from the table: the cheapest trained variant ranking within noise of the best one.

    Candidates are the rows of trained recipes (every score: accuracy, validation loss, summed training loss;
    one seed or two averaged) on every genome of the reference mean. "Within noise": the 90% interval of
    ``tau(best) - tau(row)`` (:func:`tau_difference_interval`, resampling genomes and reference seeds) reaches 0.
    Also returned: the best accuracy row and how far the choice is from it (the search's objective has been
    accuracy; a loss chosen here is a change of what the search ranks by).
    """
    names = sorted(ref)
    candidates = [r for r in rows if r["n"] == len(names) and r["n"] >= MIN_GENOMES and not math.isnan(r["tau"])
                  and r["recipe"] in RECIPES and RECIPES[r["recipe"]].kind == "train"]
    if not candidates:
        return None
    seeds = [list(ref_values[n].values()) for n in names]

    def gap(better: dict, other: dict) -> tuple[float, float]:
        return tau_difference_interval([better["scores"][n] for n in names], [other["scores"][n] for n in names],
                                       seeds)

    best = max(candidates, key=lambda r: r["tau"])
    verdicts = [(r, gap(best, r)) for r in candidates if r is not best]
    within = [best] + [r for r, (lo, _) in verdicts if lo <= 0]  # NaN (undetermined) is not within
    chosen = min(within, key=lambda r: (r["seconds"], -r["tau"]))
    accuracy = [r for r in candidates if r["field"] == "accuracy"]
    best_accuracy = max(accuracy, key=lambda r: r["tau"]) if accuracy else None
    differs = best_accuracy is not None and best_accuracy is not chosen
    return {"best": best, "chosen": chosen, "verdicts": verdicts, "within": within, "best_accuracy": best_accuracy,
            "accuracy_gap": gap(chosen, best_accuracy) if differs else None,
            "ref_seeds": max(len(s) for s in seeds)}


def analyse(panel: list[PanelGenome], records: list[dict], *, min_ref_seeds: int = 2) -> dict[str, Any]:
    """Every figure of the report from the usable results (pure: no files, no plotting)."""
    by_name = {g.name: g for g in panel}
    ref_values = _by_genome(records, REFERENCE, "accuracy")
    ref = {g: float(np.mean(list(s.values()))) for g, s in ref_values.items() if len(s) >= min_ref_seeds}
    out: dict[str, Any] = {
        "panel": len(panel), "min_ref_seeds": min_ref_seeds, "ref": ref,
        "ref_counts": {k: sum(1 for s in ref_values.values() if len(s) == k) for k in (1, 2)},
        "ref_both": sum(1 for s in ref_values.values() if len(s) >= 2),
        "ceiling": _seed_stats(ref_values), "ref_seconds": seconds_per_run(records, REFERENCE),
        "noise": {}, "rows": [], "failures": sorted({(r["recipe"], r["genome"], r["error"].split(":")[0])
                                                     for r in records if r.get("error") is not None}),
    }
    for recipe in RECIPES.values():
        if recipe.name == REFERENCE:
            continue
        cost = seconds_per_run(records, recipe.name)
        fields = TRAIN_SCORES if recipe.kind == "train" else (("score", 1.0, "score"),)
        for field, sign, label in fields:
            values = _by_genome(records, recipe.name, field)
            if not values:
                continue
            if field in ("accuracy", "score"):
                out["noise"][recipe.name] = dict(_seed_stats(values), seconds=cost)
            single = {g: sign * s[0] for g, s in values.items() if 0 in s}
            pair = {g: sign * (s[0] + s[1]) / 2 for g, s in values.items() if 0 in s and 1 in s}
            name = f"{recipe.name} {label}" if recipe.kind == "train" else recipe.name
            out["rows"].append(_row(name, recipe.name, field, "seed 0", single, ref, by_name, cost["median"]))
            if pair:
                out["rows"].append(_row(name, recipe.name, field, "2 seeds", pair, ref, by_name,
                                        2 * cost["median"]))
    for field in ("params", "macs"):
        scores = {g.name: float(getattr(g, field)) for g in panel}
        seconds = float(np.median([g.size_seconds for g in panel]))
        out["rows"].append(_row("parameter count" if field == "params" else "MACs", field, field, "-", scores,
                                ref, by_name, seconds))
    ceiling = out["ceiling"]["tau"]
    out["goal"] = min(0.6, 0.8 * ceiling) if not math.isnan(ceiling) else 0.6
    out["choice"] = choose_default(out["rows"], ref_values, ref)
    return out


def _f(v: float, spec: str = ".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _interval(row: dict) -> str:
    lo, hi = row["interval"]
    return f"{_f(row['tau'])} [{_f(lo)}, {_f(hi)}]"


def _seconds(v: float) -> str:
    return "n/a" if math.isnan(v) else (f"{v:.2f}" if v < 10 else f"{v:.0f}")


def render(analysis: dict[str, Any], panel: list[PanelGenome], records: list[dict], *, ignored: dict[str, int],
           plot_link: str | None, command: str) -> list[str]:
    """The BENCHMARKS.md section (lines)."""
    a = analysis
    ref_cost = a["ref_seconds"]
    c = a["ceiling"]
    quiet_note = (f"median seconds per run over runs whose 1-minute load average at their start was at most their "
                  f"torch threads + {QUIET_MARGIN} (the machine held little else); where a recipe has no such run, "
                  "over all its runs (marked *)")
    n_zoo = sum(g.source == "zoo" for g in panel)
    lines = [
        "## Proxy fidelity: proxies against a reference training",
        "",
        f"Command: `{command}` (runs: `python scripts/bench_fidelity.py run`; results accumulate in "
        "`benchmarks/fidelity/results.jsonl`)  ",
        f"Machine: {_results_machine(records)}  ",
        f"Panel: {len(panel)} genomes (`benchmarks/fidelity/panel.json`): the {n_zoo} zoo models and "
        f"{len(panel) - n_zoo} random genomes of `SearchSpace()` picked evenly across the predicted {PANEL_DEVICE} "
        "latency quantiles of a random pool. Dataset: Fashion-MNIST; proxies score on the validation hold-out from "
        "the training set (as the search does), the reference on the official test set (10,000 images).",
        "",
        "| recipe | what | median s per run |",
        "| --- | --- | --- |",
    ]
    for r in RECIPES.values():
        cost = seconds_per_run(records, r.name)
        lines.append(f"| {r.name} | {r.summary} | {_seconds(cost['median'])}{'' if cost['quiet'] else '*'} "
                     f"({cost['n']} of {cost['of']} runs) |")
    lines += [
        "",
        f"Seconds: {quiet_note}. Parameter count and MACs: the deployed network ({PANEL_CLASSES} classes, MACs at "
        "the latency resolution, 224 px or 256 px for MobileViT-XS), timed when the panel was built.",
        "",
        f"**Reference coverage:** {a['ref_both']} of {a['panel']} genomes have both reference seeds "
        f"({a['ref_counts'][1]} have one). The rows below rank against the reference mean over the "
        f"{len(a['ref'])} genomes with at least {a['min_ref_seeds']} reference seed(s).",
        "",
        "### Noise ceiling",
        "",
        f"- Reference seed 0 vs seed 1: Kendall tau {_f(c['tau'])} [90% bootstrap {_f(c['interval'][0])}, "
        f"{_f(c['interval'][1])}] on {c['n']} genomes; per-genome seed SD {_f(100 * c['sd'])} points "
        f"(mean over {c['n_sd']} genomes). No proxy can be expected to agree with the reference mean much beyond "
        "what the reference agrees with itself.",
    ]
    if a["ref"]:
        vals = list(a["ref"].values())
        lines.append(f"- Spread of the reference mean accuracy across genomes: {100 * min(vals):.2f} to "
                     f"{100 * max(vals):.2f} % (SD {100 * float(np.std(vals)):.2f} points).")
    for name, s in a["noise"].items():
        what = "accuracy" if RECIPES[name].kind == "train" else "score"
        sd = f"{_f(100 * s['sd'])} points" if what == "accuracy" else _f(s["sd"], ".3g")
        lines.append(f"- {name}: seed-to-seed {what} SD {sd} ({s['n_sd']} genomes), seed 0 vs seed 1 tau "
                     f"{_f(s['tau'])} ({s['n']} genomes).")
    lines += [
        "",
        "### Rank agreement with the reference mean",
        "",
        f"Goal: Kendall tau >= min(0.6, 0.8 x the reference's seed-to-seed tau) = {_f(a['goal'])} at "
        f"<= {GOAL_SECONDS:.0f} s per candidate (checked on rows of {MIN_GENOMES} genomes or more). "
        "Tau within terciles: the mean of tau inside each third of the genomes by predicted latency; "
        "partial tau: Kendall's partial tau given MACs (what the score knows beyond model size); "
        f"top-{TOP_K} recall: share of the reference's top {TOP_K} in the score's top {TOP_K}. "
        "Losses rank lower-is-better: val loss is the cross-entropy on the validation hold-out, train loss the mean "
        "training loss over the last epoch's steps (the sum of that epoch's training losses over a step count that is "
        "the same for every genome, so it ranks as the sum does). \"2 seeds\": the mean of seeds 0 and 1, at twice "
        "the cost.",
        "",
        "| score | seeds | genomes | Kendall tau [90% CI] | tau within latency terciles | partial tau given MACs "
        f"| top-{TOP_K} recall | s per candidate | goal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in a["rows"]:
        met = (row["n"] >= MIN_GENOMES and not math.isnan(row["tau"]) and row["tau"] >= a["goal"]
               and row["seconds"] <= GOAL_SECONDS)
        lines.append(f"| {row['label']} | {row['seeds']} | {row['n']} | {_interval(row)} | {_f(row['tercile'])} | "
                     f"{_f(row['partial'])} | {_f(row['recall'])} | {_seconds(row['seconds'])} | "
                     f"{'met' if met else '-'} |")
    if plot_link:
        lines += ["", f"![Kendall tau against seconds per candidate]({plot_link})"]
    lines += ["", *_choice_lines(a), "", *_search_default_lines(a["rows"])]
    if a["failures"]:
        lines += ["", "Failed runs (excluded): " + ", ".join(f"{r}/{g} ({why})" for r, g, why in a["failures"])]
    if ignored:
        lines += ["", "Results lines not counted: " + ", ".join(f"{n} ({why})" for why, n in sorted(ignored.items()))]
    lines += ["", *_genome_table(panel, records)]
    if not math.isnan(ref_cost["median"]):
        lines += ["", f"A reference run takes {_seconds(ref_cost['median'])} s here (median of {ref_cost['n']} "
                  f"{'quiet ' if ref_cost['quiet'] else ''}runs)."]
    return lines


def _results_machine(records: list[dict]) -> str:
    """The machine most results were recorded on (others named with their counts), else this one."""
    counts: dict[str, int] = {}
    for r in records:
        counts[str(r.get("machine"))] = counts.get(str(r.get("machine")), 0) + 1
    if not counts:
        return _machine()
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    others = "".join(f"; {n} run(s) on {m}" for m, n in ranked[1:])
    return f"{ranked[0][0]}{others}"


def _name(row: dict) -> str:
    return f"{row['label']} ({row['seeds']})"


def _choice_lines(a: dict[str, Any]) -> list[str]:
    """The "default proxy" subsection: which variant the table picks, and why."""
    c = a["choice"]
    lines = ["### Default proxy chosen from this table", ""]
    if c is None:
        return lines + [f"No choice yet: it needs a trained variant scored on every genome of the reference mean, "
                        f"and at least {MIN_GENOMES} genomes with {a['min_ref_seeds']} reference seed(s) "
                        f"({len(a['ref'])} so far)."]
    best, chosen = c["best"], c["chosen"]
    if c["ref_seeds"] > 1:
        noise = ("the 90% interval of tau(best) - tau(variant), resampling the genomes and each genome's reference "
                 "seeds, reaches 0")
    else:
        noise = ("the 90% interval of tau(best) - tau(variant), resampling the genomes, reaches 0; with one "
                 "reference seed per genome the reference's own noise is not in it, so the intervals are too narrow "
                 "and fewer variants count as within noise")
    lines.append(f"Rule: the cheapest trained variant (recipe, score and seeds) whose Kendall tau is within noise "
                 f"of the best one ({noise}). Best: **{_name(best)}**, tau {_f(best['tau'])} at "
                 f"{_seconds(best['seconds'])} s.")
    lines.append("")
    for row, (lo, hi) in sorted(c["verdicts"], key=lambda v: (v[0]["seconds"], -v[0]["tau"])):
        verdict = "undetermined" if math.isnan(lo) else "within noise" if lo <= 0 else "worse beyond noise"
        lines.append(f"- {_name(row)}: tau {_f(row['tau'])}, {_seconds(row['seconds'])} s; best minus it "
                     f"[{_f(lo)}, {_f(hi)}]: {verdict}.")
    goal_met = chosen["tau"] >= a["goal"] and chosen["seconds"] <= GOAL_SECONDS
    lines += ["", f"**Chosen: {_name(chosen)}**, tau {_interval(chosen)} at {_seconds(chosen['seconds'])} s per "
              f"candidate: the cheapest of {len(c['within'])} variant(s) within noise of the best. Goal (tau >= "
              f"{_f(a['goal'])} at <= {GOAL_SECONDS:.0f} s): {'met' if goal_met else '**not met**'}."]
    acc = c["best_accuracy"]
    if c["accuracy_gap"] is not None:
        lo, hi = c["accuracy_gap"]
        lines.append(f"The best accuracy score is {_name(acc)} (tau {_f(acc['tau'])} at {_seconds(acc['seconds'])} "
                     f"s); the chosen minus it [{_f(lo)}, {_f(hi)}]: "
                     f"{'better beyond noise' if lo > 0 else 'worse beyond noise' if hi < 0 else 'within noise'}.")
    return lines


def search_default_rows(rows: list[dict]) -> list[tuple[Any, str | None, dict | None]]:
    """(rung, recipe name, table row) of each rung of the plain ``python -m nas.search`` on CPU: the recipe that
    trains exactly as the rung does, and its row for the search's default score and the rung's seeds (None where
    the table has no such recipe or row yet)."""
    from nas import SearchConfig

    cfg = SearchConfig().for_train_device("cpu")
    field = SEARCH_SCORE_FIELD[cfg.score]
    out = []
    for rung in cfg.ladder():
        proxy = cfg.proxy_config(rung).to_dict()
        recipe = next((r.name for r in RECIPES.values() if r.kind == "train" and r.proxy.to_dict() == proxy), None)
        seeds = "2 seeds" if len(rung.seeds) == 2 else "seed 0" if len(rung.seeds) == 1 else None
        row = next((r for r in rows if r["recipe"] == recipe and r["field"] == field and r["seeds"] == seeds), None)
        out.append((rung, recipe, row))
    return out


def _search_default_lines(rows: list[dict]) -> list[str]:
    """What the search's default rungs rank, in this table's terms."""
    from nas import SearchConfig

    score = SearchConfig().score
    lines = ["### What the search's default rungs rank", "",
             f"`python -m nas.search` on CPU ranks by `--proxy-score {score}`:", ""]
    for rung, recipe, row in search_default_rows(rows):
        what = (f"rung {rung.index}: {rung.images:,} images x {rung.epochs} epoch, {len(rung.seeds)} seed(s)"
                + (" (the top rung)" if rung.top else ""))
        if row is None:
            lines.append(f"- {what}: " + (f"recipe `{recipe}`, not measured yet." if recipe else
                                          "no recipe of this table trains as it does."))
        else:
            lines.append(f"- {what}: `{recipe}` {row['label'].split(' ', 1)[1]} ({row['seeds']}), Kendall tau "
                         f"{_interval(row)} on {row['n']} genomes at {_seconds(row['seconds'])} s per candidate.")
    return lines


def _genome_table(panel: list[PanelGenome], records: list[dict]) -> list[str]:
    trained = [r.name for r in RECIPES.values() if r.kind == "train"]
    acc = {name: _by_genome(records, name, "accuracy") for name in trained}
    lines = ["Mean accuracy (%) per genome and recipe (seeds recorded in brackets):", "",
             "| genome | latency ms | MACs (M) | params (M) | " + " | ".join(trained) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in trained) + " |"]
    for g in sorted(panel, key=lambda g: g.latency_ms):
        cells = []
        for name in trained:
            s = acc[name].get(g.name)
            cells.append(f"{100 * float(np.mean(list(s.values()))):.2f} ({len(s)})" if s else "-")
        lines.append(f"| {g.name} | {g.latency_ms:.3f} | {g.macs / 1e6:.0f} | {g.params / 1e6:.2f} | "
                     + " | ".join(cells) + " |")
    return lines


def plot(analysis: dict[str, Any], path: Path) -> None:
    """Kendall tau (with its 90% interval) against seconds per candidate, log scale, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    style = {"accuracy": ("o", "tab:blue"), "val loss": ("^", "tab:green"), "train loss": ("D", "tab:purple")}
    drawn = set()
    for row in analysis["rows"]:
        if row["n"] < MIN_GENOMES or math.isnan(row["tau"]) or math.isnan(row["seconds"]) or row["seconds"] <= 0:
            continue
        kind = next((k for k in style if row["label"].endswith(k)), None)
        marker, color = style.get(kind, ("s", "tab:orange"))
        label = kind or "zero-cost / size"
        lo, hi = row["interval"]
        err = None if math.isnan(lo) else [[row["tau"] - lo], [hi - row["tau"]]]
        ax.errorbar(row["seconds"], row["tau"], yerr=err, fmt=marker, color=color, capsize=3,
                    mfc="none" if row["seeds"] == "2 seeds" else color,
                    label=None if label in drawn else label)
        drawn.add(label)
        ax.annotate(f"{row['recipe']}{' x2' if row['seeds'] == '2 seeds' else ''}", (row["seconds"], row["tau"]),
                    fontsize=6, xytext=(4, 2), textcoords="offset points")
    ceiling = analysis["ceiling"]["tau"]
    if not math.isnan(ceiling):
        ax.axhline(ceiling, color="gray", ls="--", lw=1, label=f"reference seed-vs-seed tau {ceiling:.2f}")
    ax.axhline(analysis["goal"], color="tab:red", ls=":", lw=1, label=f"goal tau {analysis['goal']:.2f}")
    ax.axvline(GOAL_SECONDS, color="tab:red", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per candidate on this machine (log scale)")
    ax.set_ylabel("Kendall tau vs reference mean (90% bootstrap CI)")
    ax.set_title(f"Proxy fidelity on {len(analysis['ref'])} genomes (open markers: 2 seeds averaged)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# -- commands --------------------------------------------------------------------------------------------------


def cmd_panel(args) -> int:
    if args.panel.exists() and not args.force:
        print(f"{args.panel} exists ({len(load_panel(args.panel))} genomes); nothing done (--force regenerates "
              "it, and results recorded for genomes that change are then ignored)")
        return 0
    _write_panel(args.panel, build_panel(size=args.size, pool=args.pool, seed=args.seed))
    print(f"wrote {args.panel}")
    return 0


def _write_panel(path: Path, panel: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(panel, indent=1) + "\n")
    tmp.replace(path)


def cmd_run(args) -> int:
    import torch

    from nas import load_dataset

    recipes = _check_run_options(args)
    with _exclusive(args.results):
        todo, problems = _pending(args, recipes)
        if todo:
            torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - 1))
            _execute(todo, load_dataset(args.dataset, data_dir=args.data_dir), args)
    if problems:
        _report_problems(args.results, problems)
        return 2
    return 0


@contextlib.contextmanager
def _exclusive(results: Path) -> Iterator[None]:
    """Hold an advisory lock on the results file, so that two runs never train the same missing results."""
    import fcntl

    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchInputError(f"{results}: another `run` is writing to it; wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_run_options(args) -> list[Recipe]:
    """The recipes asked for, once every ``run`` option is checked."""
    recipes = pick_recipes(args.recipes)
    if any(s < 0 for s in args.seeds):
        raise BenchInputError(f"--seeds must be non-negative, got {args.seeds}")
    if args.threads is not None and args.threads < 1:
        raise BenchInputError(f"--threads must be >= 1, got {args.threads}")
    if args.max_minutes is not None and args.max_minutes < 0:
        raise BenchInputError(f"--max-minutes must be >= 0, got {args.max_minutes}")
    return recipes


def _pending(args, recipes: list[Recipe]) -> tuple[list[tuple[Recipe, PanelGenome, int]], list[str]]:
    """Read (or first build) the panel and the results: the runs still to do, and the malformed lines."""
    if not args.panel.exists():
        _logger.info("No panel at %s: building it (size %d, pool %d, seed %d)", args.panel, args.size, args.pool,
                     args.seed)
        _write_panel(args.panel, build_panel(size=args.size, pool=args.pool, seed=args.seed))
    panel = load_panel(args.panel)
    genomes = pick_genomes(panel, args.genomes)
    records, problems = load_results(args.results)
    _report_problems(args.results, problems)
    kept, ignored = usable(records, panel, dataset=_dataset_name(args.dataset))
    if ignored:
        _logger.info("Recorded lines not counted (they stay in the file): %s", ignored)
    todo = plan(recipes, genomes, args.seeds, {(r["genome"], r["recipe"], r["seed"]) for r in kept})
    asked = len(recipes) * len(genomes) * len(args.seeds)
    _logger.info("%d runs to do (%d of the %d asked are recorded)", len(todo), asked - len(todo), asked)
    return todo, problems


def _execute(todo: list[tuple[Recipe, PanelGenome, int]], data, args) -> None:
    """Run ``todo`` in order, appending each result as it comes; stop before a run once --max-minutes is spent."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    t0 = time.perf_counter()
    with logging_redirect_tqdm(), tqdm(total=len(todo), unit="run", dynamic_ncols=True) as bar:
        for recipe, item, seed in todo:
            if args.max_minutes is not None and time.perf_counter() - t0 >= 60 * args.max_minutes:
                _logger.info("Stopping: --max-minutes %g reached (%d runs left)", args.max_minutes,
                             bar.total - bar.n)
                return
            bar.set_postfix_str(f"{recipe.name} {item.name} seed {seed}")
            rec = run_one(recipe, item, seed, data, device=args.train_device)
            append_jsonl(args.results, rec)
            _logger.info("%s %s seed %d: %s in %.0f s (load %s)", recipe.name, item.name, seed,
                         rec.get("error") or f"{_value(rec, 'accuracy'):.4f}", rec["seconds"], rec["loadavg"])
            bar.update(1)


def _dataset_name(name: str) -> str:
    from nas._data import _ALIASES

    return _ALIASES.get(name.lower(), name)


def cmd_report(args) -> int:
    panel = load_panel(args.panel)
    records, problems = load_results(args.results)
    _report_problems(args.results, problems)
    kept, ignored = usable(records, panel, dataset=_dataset_name(args.dataset))
    analysis = analyse(panel, kept, min_ref_seeds=args.min_ref_seeds)
    link = None
    if not args.no_plot and not args.no_write:  # --no-write is a dry run: nothing is written
        plot(analysis, args.plot)
        try:
            link = args.plot.resolve().relative_to(args.benchmarks.resolve().parent).as_posix()
        except ValueError:
            link = args.plot.resolve().as_posix()
    command = "python scripts/bench_fidelity.py report" + (
        f" --min-ref-seeds {args.min_ref_seeds}" if args.min_ref_seeds != 2 else "")
    lines = render(analysis, panel, kept, ignored=ignored, plot_link=link, command=command)
    print("\n".join(lines))
    if not args.no_write:
        update_section(SECTION, "\n".join(lines), path=args.benchmarks)
    return 2 if problems else 0


def cmd_recipes(args) -> int:
    for r in RECIPES.values():
        steps = f", {r.steps} steps" if r.steps else ""
        print(f"{r.name} ({r.kind}{steps}): {r.summary}\n    {json.dumps(r.config(), sort_keys=True)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--panel", type=Path, default=OUT_DIR / "panel.json")
    p.add_argument("--results", type=Path, default=OUT_DIR / "results.jsonl")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def panel_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--size", type=int, default=24, help="panel genomes, the zoo included (default 24)")
        q.add_argument("--pool", type=int, default=120, help="random genomes priced to stratify from")
        q.add_argument("--seed", type=int, default=0)

    q = sub.add_parser("panel", help="write the panel file (never overwritten without --force)")
    panel_options(q)
    q.add_argument("--force", action="store_true", help="regenerate an existing panel")
    q = sub.add_parser("run", help="run what is not recorded yet, appending to the results file")
    panel_options(q)
    q.add_argument("--recipes", nargs="+", default=None, help=f"default: all ({', '.join(RECIPES)})")
    q.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    q.add_argument("--genomes", nargs="+", default=None, help="the first N panel genomes, or genome names")
    q.add_argument("--max-minutes", type=float, default=None, help="start no run after this many minutes")
    q.add_argument("--train-device", default="cpu", help="torch device for training (cpu, cuda)")
    q.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the cores minus one, at least 1, as a single nas.search worker uses)")
    q = sub.add_parser("report", help="write the BENCHMARKS.md section and the plot from what is recorded")
    q.add_argument("--min-ref-seeds", type=int, default=2, choices=(1, 2),
                   help="reference seeds a genome needs to be ranked (default 2)")
    q.add_argument("--plot", type=Path, default=OUT_DIR / "tau_vs_cost.png")
    q.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md")
    q.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    q.add_argument("--no-plot", action="store_true")
    sub.add_parser("recipes", help="list the recipes and their settings")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    commands = {"panel": cmd_panel, "run": cmd_run, "report": cmd_report, "recipes": cmd_recipes}
    from nas import DatasetNotFoundError, SearchConfigError

    try:
        return commands[args.command](args)
    except (BenchInputError, DatasetNotFoundError, SearchConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
