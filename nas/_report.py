"""The run folder: Pareto front as CSV and JSON, one genome JSON per Pareto trial, a plot and a report."""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Candidate", "claim_run_folder", "check_run_folder", "dominates", "is_dominated", "pareto_front",
           "run_folder_name", "write_run_folder"]

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
            _atomic_write(out / OWNER_FILE, json.dumps(doc, indent=2) + "\n")


@dataclass(frozen=True)
class Candidate:
    """One evaluated architecture: a search trial or a seed baseline."""

    number: int
    accuracy: float
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

    @property
    def label(self) -> str:
        return self.name or f"trial {self.number}"


def dominates(a: Candidate, b: Candidate) -> bool:
    """``a`` is at least as accurate and as fast as ``b``, and strictly better in one."""
    return is_dominated((b.accuracy, b.latency_ms), [(a.accuracy, a.latency_ms)])


def is_dominated(point: tuple[float, float], points: Sequence[tuple[float, float]]) -> bool:
    """Whether some ``(accuracy, latency_ms)`` in ``points`` dominates ``point`` (the rule of :func:`dominates`)."""
    acc, lat = point
    return any(a >= acc and ms <= lat and (a > acc or ms < lat) for a, ms in points)


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """The non-dominated feasible candidates, fastest first (duplicates of one point are all kept)."""
    pool = [c for c in cands if c.feasible]
    front = [c for c in pool if not any(dominates(o, c) for o in pool)]
    return sorted(front, key=lambda c: (c.latency_ms, -c.accuracy, c.number))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _plot(path: Path, cands: Sequence[Candidate], front: Sequence[Candidate], baselines: Sequence[Candidate],
          *, metric: str, latency_label: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    rest = [c for c in cands if c not in front]
    if rest:
        ax.scatter([c.latency_ms for c in rest], [c.accuracy for c in rest], s=18, c="0.65",
                   label="searched (dominated or over budget)")
    if front:
        xs = [c.latency_ms for c in front]
        ys = [c.accuracy for c in front]
        ax.step(xs, ys, where="post", c="tab:blue", lw=1.5)
        ax.scatter(xs, ys, s=30, c="tab:blue", zorder=3, label="Pareto front")
    for b in baselines:
        ax.scatter([b.latency_ms], [b.accuracy], marker="*", s=140, c="tab:red", zorder=4,
                   label="seed baselines" if b is baselines[0] else None)
        ax.annotate(b.name, (b.latency_ms, b.accuracy), textcoords="offset points", xytext=(5, 4), fontsize=7,
                    color="tab:red")
    import textwrap

    ax.set_xlabel("\n".join(textwrap.wrap(f"latency (ms): {latency_label}", 95)), fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _row(c: Candidate, latency_label: str) -> dict[str, Any]:
    return {
        "trial": c.number, "name": c.label, "baseline": c.baseline, "accuracy": round(c.accuracy, 6),
        "latency_ms": round(c.latency_ms, 6), "latency_source": c.latency_source, "latency_label": latency_label,
        "latency_resolution": c.latency_resolution, "params": c.params, "stopped_early": c.stopped_early,
        "weights": c.weights,
    }


def write_run_folder(
        out: str | os.PathLike,
        *,
        candidates: Sequence[Candidate],
        baselines: Sequence[Candidate],
        meta: dict[str, Any],
        metric: str = "proxy accuracy",
        latency_label: str,
) -> dict[str, Path]:
    """Write ``pareto.csv``, ``pareto.json``, ``genomes/trial_<n>.json``, ``pareto.png`` and ``report.md``.

    Files are replaced atomically, so an interrupted write leaves the previous report intact.

    Returns:
        Name -> path of every file written.
    """
    out = Path(out)
    check_run_folder(out, str(meta.get("study", "")))  # a folder of another study (or none) is never written
    (out / "genomes").mkdir(parents=True, exist_ok=True)
    front = pareto_front(candidates)
    paths: dict[str, Path] = {}

    rows = [_row(c, latency_label) for c in front]
    p = out / "pareto.csv"
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(_row(front[0], "") if front else ["trial"]) + ["genome"])
        w.writeheader()
        for c, r in zip(front, rows):
            w.writerow({**r, "genome": json.dumps(c.genome, sort_keys=True)})
    os.replace(tmp, p)
    paths["pareto.csv"] = p

    doc = {
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        **meta,
        "metric": metric,
        "latency_label": latency_label,
        "pareto": [{**r, "genome": c.genome, **({"extra": c.extra} if c.extra else {})} for c, r in zip(front, rows)],
        "baselines": [{**_row(b, latency_label), "genome": b.genome} for b in baselines],
    }
    _atomic_write(out / "pareto.json", json.dumps(doc, indent=2, sort_keys=False) + "\n")
    paths["pareto.json"] = out / "pareto.json"

    for c in front:
        g = out / "genomes" / f"trial_{c.number}.json"
        _atomic_write(g, json.dumps(c.genome, indent=2, sort_keys=True) + "\n")
        paths[g.name] = g
    for old in (out / "genomes").glob("trial_*.json"):  # trials that have dropped off the front since
        if old.name not in paths:
            old.unlink(missing_ok=True)

    title = f"{meta.get('study', '')}: {meta.get('dataset', '')} proxy vs {meta.get('device', '')} latency"
    _plot(out / "pareto.png", candidates, front, baselines, metric=metric, latency_label=latency_label, title=title)
    paths["pareto.png"] = out / "pareto.png"

    _atomic_write(out / "report.md", _report_md(front, candidates, baselines, meta, metric, latency_label))
    paths["report.md"] = out / "report.md"
    return paths


def _fmt(c: Candidate) -> str:
    g = c.genome
    stages = g.get("stages", [])
    arch = " | ".join(f"{s.get('mixer')} d{s.get('depth')} w{s.get('width')}" for s in stages)
    return f"{g.get('stem')} stem; {arch}; {g.get('head')} head"


def _beats(c: Candidate, b: Candidate) -> bool:
    return c.latency_resolution == b.latency_resolution and c.accuracy > b.accuracy and c.latency_ms <= b.latency_ms


def _comparable(front: Sequence[Candidate], b: Candidate) -> bool:
    return not front or any(c.latency_resolution == b.latency_resolution for c in front)


def _report_md(front, cands, baselines, meta, metric, latency_label) -> str:
    lines = [
        f"# RepNAS search report: {meta.get('study')}",
        "",
        f"- device: **{meta.get('device')}**; latency is {latency_label}, at {meta.get('resolution')}x"
        f"{meta.get('resolution')} in the deployed (re-parameterized) form",
        f"- dataset: {meta.get('dataset')} ({meta.get('dataset_source', '')}); {metric} from "
        f"{meta.get('proxy_description', '')}",
        f"- sampler: {meta.get('sampler')}, seed {meta.get('seed')}; storage `{meta.get('storage')}`",
        f"- trials: {meta.get('n_complete', 0)} complete, {meta.get('n_rejected', 0)} rejected before training "
        f"(over the latency budget), {meta.get('n_duplicates', 0)} skipped as repeats of a scored genome, "
        f"{meta.get('n_failed', 0)} failed, {meta.get('n_running', 0)} running",
    ]
    if meta.get("latency_max") is not None:
        lines.append(f"- latency budget: {meta['latency_max']:.3f} ms (hard constraint)")
    if meta.get("failures"):
        lines.append("- failures: " + "; ".join(f"trial {n}: {r}" for n, r in meta["failures"][:10]))
    lines += ["", "## Pareto front", "",
              f"| trial | {metric} | latency (ms) | source | params | architecture |",
              "| --- | --- | --- | --- | --- | --- |"]
    for c in front:
        params = f"{c.params / 1e6:.2f}M" if c.params else "?"
        lines.append(f"| {c.number} | {c.accuracy:.4f} | {c.latency_ms:.3f} | {c.latency_source} | {params} | "
                     f"{_fmt(c)} |")
    if baselines:
        lines += ["", "## Seed baselines (same proxy)", "",
                  f"| model | {metric} | latency (ms) | at | dominated by the front? |",
                  "| --- | --- | --- | --- | --- |"]
        for b in baselines:
            beat = [c for c in front if _beats(c, b)]
            if not _comparable(front, b):
                verdict = f"n/a (priced at {b.latency_resolution}px, the search at another resolution)"
            else:
                verdict = f"yes (trial {beat[0].number}: {beat[0].accuracy:.4f} at {beat[0].latency_ms:.3f} ms)" \
                    if beat else "no"
            lines.append(f"| {b.name} | {b.accuracy:.4f} | {b.latency_ms:.3f} | {b.latency_resolution}px | "
                         f"{verdict} |")
        comparable = [b for b in baselines if _comparable(front, b)]
        n_beat = sum(1 for b in comparable if any(_beats(c, b) for c in front))
        lines += ["", f"The front dominates {n_beat} of the {len(comparable)} seed baselines priced at the search's "
                      f"resolution (higher {metric} at equal or lower latency)."]
    lines += ["", "Files: `pareto.csv`, `pareto.json`, `genomes/trial_<n>.json`, `pareto.png`; proxy weights of front "
              "trials in `weights/`.", ""]
    return "\n".join(lines)

