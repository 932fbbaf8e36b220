"""The run folder: Pareto front as CSV and JSON, one genome JSON per Pareto trial, a plot and a report."""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space import atomic_path, atomic_write

__all__ = ["Candidate", "Verdict", "baseline_verdict", "claim_run_folder", "check_run_folder",
           "dominates", "is_dominated", "pareto_front", "pooled_seed_sd", "run_folder_name", "write_run_folder"]

_logger = logging.getLogger(__name__)

RUNS_DIR = Path("runs")
"""Where run folders go by default: ``runs/<run_folder_name(study)>``."""
OWNER_FILE = ".repnas-run.json"
"""The marker naming the study a run folder belongs to (written first, checked before every write)."""
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]{0,79}")
_HASHED = re.compile(r".*-[0-9a-f]{10}")


def run_folder_name(study: str) -> str:
    """The folder name of ``study``'s run folder under ``runs/``: one name per study, never a path.

    A plain name (letters, digits, ``_ . + = -``, at most 80 characters, not ending in what looks like this
    function's hash suffix) is used as it is; any other name becomes a readable slug plus ``-`` and ten hex
    digits of its SHA-256, so ``pair/x`` and ``pair-x`` get different folders, and ``..``, ``/abs`` or a
    600-character name stay one safe component under ``runs/``.
    """
    if _PLAIN_NAME.fullmatch(study) and not _HASHED.fullmatch(study):
        return study
    slug = re.sub(r"[^A-Za-z0-9_.+=-]+", "-", study).strip("-.")[:60] or "study"
    return f"{slug}-{hashlib.sha256(study.encode()).hexdigest()[:10]}"


def _owner(out: Path) -> dict[str, Any] | None:
    f = out / OWNER_FILE
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    return doc if isinstance(doc, dict) else {}


def check_run_folder(out: Path, study: str, study_uid: str | None = None) -> None:
    """Refuse to write into ``out`` unless it is new, empty, or marked as the run folder of ``study``.

    ``study_uid`` (the study's own id, stored with it) is compared when both sides have one, so that two
    storages holding studies of the same name cannot share a folder either.

    Raises:
        SearchConfigError: ``out`` is a file, holds files of something else, or belongs to another study.
    """
    from ._errors import SearchConfigError

    if out.exists() and not out.is_dir():
        raise SearchConfigError(f"run folder {out} exists and is not a folder; pass another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    owner = _owner(out)
    if owner is None and _written_by(out) == study:  # a run folder of an earlier version, before the marker
        return
    if owner is None:
        raise SearchConfigError(
            f"run folder {out} already holds files and is not the run folder of study {study!r} (no {OWNER_FILE}); "
            "nothing was written: pass an empty or new --out")
    if owner.get("study") != study or (study_uid and owner.get("study_uid") not in (None, study_uid)):
        raise SearchConfigError(
            f"run folder {out} belongs to study {owner.get('study')!r}"
            + (" of another storage" if owner.get("study") == study else "")
            + f", not to {study!r}; nothing was written: pass another --out or --study")


def _written_by(out: Path) -> str | None:
    """The study named in ``out/pareto.json`` (run folders of earlier versions carry no marker), or None."""
    try:
        doc = json.loads((out / "pareto.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc.get("study") if isinstance(doc, dict) else None


def claim_run_folder(out: Path, study: str, study_uid: str | None) -> None:
    """Create ``out`` (if needed) and mark it as ``study``'s, after :func:`check_run_folder` allowed it.

    The marker is created exclusively, so of two studies claiming one new folder at the same moment the second
    is refused; a marker without the study's id (``study_uid`` unknown) gets it later.
    """
    from ._errors import SearchConfigError

    check_run_folder(out, study, study_uid)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"study": study, **({"study_uid": study_uid} if study_uid else {})}
    try:
        with open(out / OWNER_FILE, "x", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=2) + "\n")
    except FileExistsError:
        owner = _owner(out) or {}
        if owner.get("study") != study or (study_uid and owner.get("study_uid") not in (None, study_uid)):
            raise SearchConfigError(f"run folder {out} was just claimed by study {owner.get('study')!r}; nothing "
                                    "was written: pass another --out") from None
        if study_uid and owner.get("study_uid") is None:
            atomic_write(out / OWNER_FILE, json.dumps(doc, indent=2) + "\n")


NOISE_Z = 2.0
"""A difference of two means counts as real when it exceeds this many standard errors (about 95%)."""


@dataclass(frozen=True)
class Candidate:
    """One evaluated architecture at one rung: a search candidate (``number`` = its rung-0 trial) or a seed
    baseline.

    ``score`` is what the search ranks (higher is better: the proxy accuracy, minus the validation loss, or a
    zero-cost score), the mean over ``seeds`` seeds with ``score_sd`` their standard deviation; ``accuracy`` and
    ``accuracy_sd`` are the proxy's validation accuracy the same way (None for a zero-cost score), equal to the
    score's when the score is the accuracy."""

    number: int
    score: float
    latency_ms: float
    genome: dict[str, Any]
    latency_source: str
    latency_resolution: int
    name: str = ""
    baseline: bool = False
    feasible: bool = True
    params: int | None = None
    stopped_early: bool = False
    weights: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    score_sd: float | None = None
    accuracy: float | None = None
    accuracy_sd: float | None = None
    seeds: int = 1
    fidelity: int | None = None
    rung: int = 0
    latency_error: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"trial {self.number}"

    @property
    def shown_score(self) -> str:
        """``mean +- sd`` of the score (or the single value)."""
        return _mean_sd(self.score, self.score_sd)

    @property
    def shown_accuracy(self) -> str:
        """``mean +- sd`` of the accuracy (``n/a`` for a zero-cost score)."""
        return "n/a" if self.accuracy is None else _mean_sd(self.accuracy, self.accuracy_sd)


def _mean_sd(mean: float, sd: float | None) -> str:
    return f"{mean:.4f}" + (f" +- {sd:.4f}" if sd is not None else "")


def dominates(a: Candidate, b: Candidate) -> bool:
    """``a`` scores at least as high and is at least as fast as ``b``, and is strictly better in one."""
    return is_dominated((b.score, b.latency_ms), [(a.score, a.latency_ms)])


def is_dominated(point: tuple[float, float], points: Sequence[tuple[float, float]]) -> bool:
    """Whether some ``(score, latency_ms)`` in ``points`` dominates ``point`` (the rule of :func:`dominates`)."""
    acc, lat = point
    return any(a >= acc and ms <= lat and (a > acc or ms < lat) for a, ms in points)


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """The non-dominated feasible candidates, fastest first (duplicates of one point are all kept)."""
    pool = [c for c in cands if c.feasible]
    front = [c for c in pool if not any(dominates(o, c) for o in pool)]
    return sorted(front, key=lambda c: (c.latency_ms, -c.score, c.number))


def _plot(path: Path, cands: Sequence[Candidate], front: Sequence[Candidate], baselines: Sequence[Candidate],
          *, metric: str, latency_label: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    on_front = {id(c) for c in front}
    rest = [c for c in cands if id(c) not in on_front]
    for rung in sorted({c.rung for c in rest}):
        pts = [c for c in rest if c.rung == rung]
        ax.scatter([c.latency_ms for c in pts], [c.score for c in pts], s=14 + 8 * rung,
                   c=str(0.75 - 0.2 * min(rung, 3)), label=f"highest rung {rung} (dominated, over budget or not "
                   "promoted)")
    if front:
        xs = [c.latency_ms for c in front]
        ys = [c.score for c in front]
        ax.step(xs, ys, where="post", c="tab:blue", lw=1.5)
        ax.errorbar(xs, ys, yerr=[c.score_sd or 0.0 for c in front], fmt="o", ms=5, c="tab:blue", capsize=3,
                    zorder=3, label=f"Pareto front (rung {front[0].rung}, mean +- sd over seeds)")
    for b in baselines:
        ax.errorbar([b.latency_ms], [b.score], yerr=[b.score_sd or 0.0], fmt="*", ms=12, c="tab:red",
                    capsize=3, zorder=4, label="seed baselines (at their highest rung)" if b is baselines[0] else None)
        ax.annotate(f"{b.name} (r{b.rung})", (b.latency_ms, b.score), textcoords="offset points", xytext=(5, 4),
                    fontsize=7, color="tab:red")
    import textwrap

    ax.set_xlabel("\n".join(textwrap.wrap(f"latency (ms): {latency_label}", 95)), fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:  # matplotlib takes the format from the name
        fig.savefig(tmp)
        plt.close(fig)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _row(c: Candidate, latency_label: str) -> dict[str, Any]:
    return {
        "trial": c.number, "name": c.label, "baseline": c.baseline, "score": round(c.score, 6),
        "score_sd": _round(c.score_sd), "accuracy": _round(c.accuracy), "accuracy_sd": _round(c.accuracy_sd),
        "seeds": c.seeds,
        "fidelity": c.fidelity, "rung": c.rung,
        "latency_ms": round(c.latency_ms, 6), "latency_source": c.latency_source, "latency_label": latency_label,
        "latency_error": c.latency_error,
        "latency_resolution": c.latency_resolution, "params": c.params, "stopped_early": c.stopped_early,
        "weights": c.weights,
    }


def write_run_folder(
        out: str | os.PathLike,
        *,
        candidates: Sequence[Candidate],
        front: Sequence[Candidate],
        baselines: Sequence[Candidate],
        verdicts: dict[str, Verdict],
        meta: dict[str, Any],
        metric: str,
        accuracy_column: bool = False,
        latency_label: str,
) -> dict[str, Path]:
    """Write ``pareto.csv``, ``pareto.json``, ``genomes/trial_<n>.json``, ``pareto.png`` and ``report.md``.

    ``metric`` names the score; ``accuracy_column`` adds the accuracy beside it (a score that is not the
    accuracy). ``candidates`` are every candidate at its highest rung, ``front`` the Pareto front at the top rung
    reached,
    ``verdicts`` each baseline's comparison (:func:`baseline_verdict`). Files are replaced atomically, so an
    interrupted write leaves the previous report intact.

    Returns:
        Name -> path of every file written.
    """
    out = Path(out)
    check_run_folder(out, str(meta.get("study", "")))  # a folder of another study (or none) is never written
    (out / "genomes").mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    rows = [_row(c, latency_label) for c in front]
    p = out / "pareto.csv"
    with atomic_path(p) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(_row(front[0], "") if front else ["trial"]) + ["genome"])
        w.writeheader()
        for c, r in zip(front, rows):
            w.writerow({**r, "genome": json.dumps(c.genome, sort_keys=True)})
    paths["pareto.csv"] = p

    doc = {
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        **meta,
        "metric": metric,
        "latency_label": latency_label,
        "pareto": [{**r, "genome": c.genome, **({"extra": c.extra} if c.extra else {})} for c, r in zip(front, rows)],
        "baselines": [{**_row(b, latency_label), "genome": b.genome,
                       **({"verdict": verdicts[b.name].kind} if b.name in verdicts else {})} for b in baselines],
    }
    atomic_write(out / "pareto.json", json.dumps(doc, indent=2, sort_keys=False) + "\n")
    paths["pareto.json"] = out / "pareto.json"

    for c in front:
        g = out / "genomes" / f"trial_{c.number}.json"
        atomic_write(g, json.dumps(c.genome, indent=2, sort_keys=True) + "\n")
        paths[g.name] = g
    for old in (out / "genomes").glob("trial_*.json"):  # trials that have dropped off the front since
        if old.name not in paths:
            old.unlink(missing_ok=True)

    title = f"{meta.get('study', '')}: {meta.get('dataset', '')} proxy vs {meta.get('device', '')} latency"
    _plot(out / "pareto.png", candidates, front, baselines, metric=metric, latency_label=latency_label, title=title)
    paths["pareto.png"] = out / "pareto.png"

    atomic_write(out / "report.md", _report_md(front, baselines, verdicts, meta, metric, accuracy_column,
                                               latency_label))
    paths["report.md"] = out / "report.md"
    return paths


def _fmt(c: Candidate) -> str:
    g = c.genome
    stages = g.get("stages", [])
    arch = " | ".join(f"{s.get('mixer')} d{s.get('depth')} w{s.get('width')}" for s in stages)
    return f"{g.get('stem')} stem; {arch}; {g.get('head')} head"


def pooled_seed_sd(evals: Sequence[Candidate]) -> float | None:
    """The seed-to-seed standard deviation of the score pooled over every evaluation with two or more seeds
    (None: none)."""
    var = [c.score_sd ** 2 for c in evals if c.seeds >= 2 and c.score_sd is not None]
    return math.sqrt(sum(var) / len(var)) if var else None


@dataclass(frozen=True)
class Verdict:
    """How a baseline compares with the candidates evaluated at its rung.

    ``kind``: ``dominated`` (a candidate as fast or faster scores higher by more than the noise margin),
    ``tie`` (one as fast or faster is within the margin), ``not dominated`` or ``n/a`` (no candidate was priced
    at the baseline's resolution).
    """

    kind: str
    by: Candidate | None = None
    margin: float = 0.0
    noise_measured: bool = True
    why: str = ""

    def text(self) -> str:
        if self.kind == "n/a":
            return f"n/a ({self.why})"
        if self.by is None:
            return "no"
        what = "yes" if self.kind == "dominated" else "tie within noise"
        noise = f"margin {self.margin:.4f}" if self.noise_measured else "noise not measured"
        return (f"{what} (trial {self.by.number}: {self.by.shown_score} at {self.by.latency_ms:.3f} ms, rung "
                f"{self.by.rung}; {noise})")


def baseline_verdict(b: Candidate, peers: Sequence[Candidate], sd: float | None) -> Verdict:
    """Epsilon-dominance of baseline ``b`` by the feasible ``peers`` (candidates at ``b``'s rung).

    The margin of candidate ``c`` is ``NOISE_Z * sd * sqrt(1/seeds_c + 1/seeds_b)``: the standard error of a
    difference of two means of seed-averaged scores, with ``sd`` the pooled seed-to-seed spread (measured at
    the top rung; a lower rung is assumed no less noisy). Without a measured ``sd`` the margin is 0 and the
    verdict says so.
    """
    if not any(c.feasible for c in peers):
        return Verdict("n/a", why=f"no feasible candidate evaluated at rung {b.rung} yet")
    same = [c for c in peers if c.feasible and c.latency_resolution == b.latency_resolution]
    if not same:
        return Verdict("n/a", why=f"priced at {b.latency_resolution}px, the candidates at another resolution")
    faster = sorted((c for c in same if c.latency_ms <= b.latency_ms), key=lambda c: -c.score)

    def margin(c: Candidate) -> float:
        return 0.0 if sd is None else NOISE_Z * sd * math.sqrt(1 / c.seeds + 1 / b.seeds)

    for c in faster:
        if c.score - b.score > margin(c):
            return Verdict("dominated", c, margin(c), sd is not None)
    for c in faster:
        if c.score - b.score >= -margin(c) and (sd is not None or c.score > b.score):
            return Verdict("tie", c, margin(c), sd is not None)
    return Verdict("not dominated", None, 0.0, sd is not None)


def _report_md(front, baselines, verdicts, meta, metric, acc, latency_label) -> str:
    lines = [
        f"# RepNAS search report: {meta.get('study')}",
        "",
        f"- device: **{meta.get('device')}**; latency is {latency_label}, at {meta.get('resolution')}x"
        f"{meta.get('resolution')} in the deployed (re-parameterized) form",
        f"- dataset: {meta.get('dataset')} ({meta.get('dataset_source', '')}); {metric} from "
        f"{meta.get('proxy_description', '')}",
        f"- sampler: {meta.get('sampler')}, seed {meta.get('seed')}; storage `{meta.get('storage')}`",
        f"- candidates: {meta.get('n_complete', 0)} complete at rung 0, {meta.get('n_rejected', 0)} rejected before "
        f"training (over the latency budget), {meta.get('n_duplicates', 0)} skipped as repeats of a scored genome, "
        f"{meta.get('n_failed', 0)} failed, {meta.get('n_running', 0)} running",
        "- candidates evaluated per rung: "
        + (", ".join(f"rung {r} ({_images(f, meta.get('proxy'))}): {n}" for r, n, f in meta.get("rungs", []))
           or "none yet"),
    ]
    sd = meta.get("seed_sd")
    lines.append(f"- seed-to-seed spread at the top rung: sd {sd:.4f} (pooled); a difference of two {metric} "
                 f"means below about {NOISE_Z:g} standard errors is reported as a tie within noise" if sd is not None
                 else "- seed-to-seed spread: not measured (no evaluation with two seeds yet); differences are "
                      "compared as they are")
    if meta.get("latency_max") is not None:
        lines.append(f"- latency budget: {meta['latency_max']:.3f} ms (hard constraint)")
    if meta.get("failures"):
        lines.append("- failures: " + "; ".join(f"trial {n}: {r}" for n, r in meta["failures"][:10]))
    rung = front[0].rung if front else None
    acc_head, acc_rule = (" accuracy (mean +- sd) |", " --- |") if acc else ("", "")
    lines += ["", f"## Pareto front (rung {rung}, the highest reached)" if front else "## Pareto front", "",
              f"| trial | {metric} (mean +- sd) |{acc_head} seeds | latency (ms) | source | latency error | params | "
              "architecture |", f"| --- | --- |{acc_rule} --- | --- | --- | --- | --- | --- |"]
    for c in front:
        params = f"{c.params / 1e6:.2f}M" if c.params else "?"
        shown_acc = f" {c.shown_accuracy} |" if acc else ""
        lines.append(f"| {c.number} | {c.shown_score} |{shown_acc} {c.seeds} | {c.latency_ms:.3f} | "
                     f"{c.latency_source} | {c.latency_error or 'as labelled'} | {params} | {_fmt(c)} |")
    if baselines:
        lines += ["", "## Seed baselines (same proxy and rungs)", "",
                  f"| model | {metric} (mean +- sd) |{acc_head} rung | latency (ms) | at | dominated by a candidate "
                  f"at its rung? |", f"| --- | --- |{acc_rule} --- | --- | --- | --- |"]
        for b in baselines:
            v = verdicts.get(b.name)
            shown_acc = f" {b.shown_accuracy} |" if acc else ""
            lines.append(f"| {b.name} | {b.shown_score} |{shown_acc} {b.rung} | {b.latency_ms:.3f} | "
                         f"{b.latency_resolution}px | {v.text() if v else '?'} |")
        kinds = [v.kind for v in verdicts.values()]
        lines += ["", f"Of the {sum(k != 'n/a' for k in kinds)} baselines priced at the search's resolution, "
                      f"{kinds.count('dominated')} are dominated (a higher {metric} beyond the noise margin at "
                      f"equal or lower latency, compared at the baseline's rung), {kinds.count('tie')} tie within "
                      f"noise and {kinds.count('not dominated')} are not dominated."]
    lines += ["", "Files: `pareto.csv`, `pareto.json`, `genomes/trial_<n>.json`, `pareto.png`; proxy weights of front "
              "trials in `weights/`.", ""]
    return "\n".join(lines)


def _images(fidelity: int | None, proxy: str | None) -> str:
    if fidelity:
        return f"{fidelity:,} images"
    return "zero-cost" if proxy == "zero-cost" else "one fidelity, images not recorded"
