"""The multi-objective, multi-fidelity search: check, run the workers, read the studies back, report.

Every candidate is scored at the cheapest rung; the top 1/eta of each rung, by non-dominated rank and crowding
distance on (score, latency), is retrained at the next (:mod:`nas._rungs`, :mod:`nas._worker`); the top
rung averages two or more seeds. The front is reported at the highest rung reached, with each score's (and
accuracy's) seed spread, and a seed baseline is called dominated only beyond the measured noise.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._config import BASELINE_SUFFIX, RUNGS_SUFFIX, SearchConfig, SearchResult
from ._errors import SearchConfigError, StudyStorageError
from ._pricing import check_device, latency_error, latency_label, min_reachable_latency, space
from ._record import StudyData, StudyKeys, TrialRecord
from ._report import (
    Candidate,
    Verdict,
    baseline_verdict,
    check_run_folder,
    claim_run_folder,
    pareto_front,
    pooled_seed_sd,
    write_run_folder,
)
from ._storage import is_sqlite, load_existing_study, open_storage, redact_url

__all__ = ["BASELINE_SUFFIX", "RUNGS_SUFFIX", "SearchConfig", "SearchResult", "check_config", "collect",
           "latency_label", "min_reachable_latency", "run_search", "write_report"]

_logger = logging.getLogger(__name__)


def check_config(config: SearchConfig) -> tuple[SearchConfig, Any]:
    """Every check that needs no training, before anything is stored.

    Device and LUT, proxy settings and rungs, the search space at ``--resolution``, the run folder (it must be
    new, empty or this study's own), workers vs SQLite, dataset presence and size, budget reachability, and last
    the storage (whose SQLite file is created only once everything else passed).

    Returns:
        The config with its device-dependent defaults filled in, and the loaded dataset.
    """
    from ._objective import train_device

    _, table = check_device(config)
    unresolved = config
    config = config.for_train_device(train_device(config.train_device))
    for rung in config.ladder():
        config.proxy_config(rung)  # bad proxy settings (--epochs 100000, --proxy-resolution 4096) fail here
    from search_space import InvalidGenomeError

    try:
        space(config).sample(0)  # the space at --resolution (e.g. --resolution 32000 exceeds every genome's)
    except InvalidGenomeError as e:
        raise SearchConfigError(f"--resolution {config.resolution}: {e}") from None
    check_run_folder(config.out_dir, config.study_name)
    if config.workers > 1 and is_sqlite(config.storage_url):
        raise SearchConfigError(
            f"--workers {config.workers} needs a database server: SQLite ({config.storage_url}) cannot serve several "
            "workers safely. Pass --storage postgresql://USER:PASS@HOST:5432/DB (see README: distributed search), "
            "or run with --workers 1")
    from ._data import load_dataset

    data = load_dataset(config.dataset, data_dir=config.data_dir, seed=config.seed)
    config = unresolved.for_train_device(train_device(config.train_device), train_images=len(data.train_y))
    top = config.ladder()[-1]
    if config.proxy == "train" and top.images > len(data.train_y):
        raise SearchConfigError(
            f"the top rung trains on {top.images:,} images but {data.name} has {len(data.train_y):,} training images "
            "(after the validation hold-out); pass smaller --rungs or --proxy-images")
    if config.latency_max is not None:
        ms, _ = min_reachable_latency(config, table)
        if config.latency_max < ms:
            raise SearchConfigError(
                f"--latency-max {config.latency_max:g} ms is below anything the search space can reach on "
                f"{config.device}: its cheapest genome costs {ms:.3f} ms ({latency_label(config.device)})")
        _logger.info("cheapest genome of the space on %s: %.3f ms (budget %.3f ms)", config.device, ms,
                     config.latency_max)
    open_storage(config.storage, heartbeat_interval=None)  # malformed / unreachable URLs fail here
    return config, data


def run_search(config: SearchConfig, *, progress: bool = True) -> SearchResult:
    """Check the configuration, run ``config.workers`` workers (in this process when 1) and write the report.

    Ctrl-C (SIGINT) stops every worker (the evaluation in flight is lost, completed ones are kept), writes the
    report from what completed, then raises ``KeyboardInterrupt``.
    """
    from ._worker import quiet_interrupted_trials, run_local_workers, run_worker

    config, data = check_config(config)
    _logger.info("rungs: %s", ", ".join(f"{r.images:,} images x {len(r.seeds)} seed(s)" for r in config.ladder()))
    quiet_interrupted_trials()
    try:
        if config.workers == 1:
            run_worker(config, worker=0, progress=progress, data=data)
        else:
            run_local_workers(config)
    except KeyboardInterrupt:
        _logger.info("writing the report from the evaluations completed so far")
        try:
            write_report(config)
        except (StudyStorageError, SearchConfigError, OSError) as e:  # e.g. interrupted before the study existed
            _logger.warning("no report written: %s", e)
        raise
    return write_report(config)


# -- reading the studies back ------------------------------------------------------------------------------------
def candidate_from_trial(t, config: SearchConfig, *, rec: TrialRecord | None = None) -> Candidate:
    """A complete evaluation (of any of the three studies) as a report :class:`Candidate`."""
    rec = rec or TrialRecord.from_trial(t)
    baseline = rec.baseline is not None
    score = float(t.values[0])
    accuracy, accuracy_sd = config.scoring.accuracy(score, rec)
    return Candidate(
        number=rec.candidate if rec.candidate is not None and not baseline else t.number,
        score=score, latency_ms=float(t.values[1]), genome=rec.genome or {},
        latency_source=rec.latency_source or "?", latency_resolution=int(rec.latency_resolution or 0),
        name=rec.baseline or "", baseline=baseline, feasible=rec.counts_as_feasible, params=rec.num_params,
        stopped_early=bool(rec.stopped_early), weights=rec.weights,
        extra={k: v for k, v in (("duplicate_of", rec.duplicate_of), ("stop_reason", rec.stop_reason),
                                 ("seconds", rec.seconds)) if v is not None},
        score_sd=config.scoring.score_sd(rec), accuracy=accuracy, accuracy_sd=accuracy_sd,
        seeds=rec.n_seeds, fidelity=rec.fidelity, rung=rec.rung_or_zero,
    )


@dataclass
class Collected:
    """What the studies hold: candidates per rung (keyed by candidate number), baselines per rung (by name),
    trial counts of the search study, and the evaluations still queued or running."""

    by_rung: dict[int, dict[int, Candidate]] = field(default_factory=dict)
    baselines_by_rung: dict[int, dict[str, Candidate]] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    unfinished: set[int] = field(default_factory=set)

    def highest(self) -> list[Candidate]:
        """Every candidate at the highest rung it reached."""
        best: dict[int, Candidate] = {}
        for r in sorted(self.by_rung):
            best.update(self.by_rung[r])
        return sorted(best.values(), key=lambda c: c.number)

    def front(self) -> list[Candidate]:
        """The Pareto front at the highest rung holding a feasible candidate."""
        for r in sorted(self.by_rung, reverse=True):
            front = pareto_front(list(self.by_rung[r].values()))
            if front:
                return front
        return []

    def baselines(self) -> list[Candidate]:
        best: dict[str, Candidate] = {}
        for r in sorted(self.baselines_by_rung):
            best.update(self.baselines_by_rung[r])
        return sorted(best.values(), key=lambda b: b.latency_ms)

    def seed_sd(self) -> float | None:
        evals = [c for r in self.by_rung.values() for c in r.values()]
        evals += [b for r in self.baselines_by_rung.values() for b in r.values()]
        return pooled_seed_sd(evals)

    def verdicts(self) -> dict[str, Verdict]:
        sd = self.seed_sd()
        return {b.name: baseline_verdict(b, list(self.by_rung.get(b.rung, {}).values()), sd)
                for b in self.baselines()}


def collect(config: SearchConfig, study=None) -> Collected:
    """Read the search study and its companions back from storage (scored as the study was searched)."""
    import optuna

    S = optuna.trial.TrialState
    storage = open_storage(config.storage, heartbeat_interval=None)
    if study is None:
        study = load_existing_study(storage, config.study_name)
    config = config.scored_as_stored(study)
    out = Collected()
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == S.COMPLETE and t.values:
            c = candidate_from_trial(t, config)
            out.by_rung.setdefault(c.rung, {}).setdefault(c.number, c)
    for t in _companion_trials(storage, config.study_name + RUNGS_SUFFIX):
        rec = TrialRecord.from_trial(t)
        if t.state == S.COMPLETE and t.values:
            c = candidate_from_trial(t, config, rec=rec)
            out.by_rung.setdefault(c.rung, {}).setdefault(c.number, c)
        elif t.state in (S.RUNNING, S.WAITING) and rec.candidate is not None:
            out.unfinished.add(rec.candidate)
    if config.baselines:
        for t in _companion_trials(storage, config.study_name + BASELINE_SUFFIX):
            if t.state == S.COMPLETE and t.values and TrialRecord.from_trial(t).baseline is not None:
                b = candidate_from_trial(t, config)
                out.baselines_by_rung.setdefault(b.rung, {}).setdefault(b.name, b)
    recs = [(t, TrialRecord.from_trial(t)) for t in trials]
    out.counts = {
        "n_complete": sum(t.state == S.COMPLETE for t in trials),
        "n_rejected": sum(t.state == S.PRUNED and r.rejected is not None for t, r in recs),
        "n_duplicates": sum(t.state == S.PRUNED and r.duplicate_of is not None for t, r in recs),
        "n_failed": sum(t.state == S.FAIL for t in trials),
        "n_running": sum(t.state == S.RUNNING for t in trials),
        "failures": [(t.number, r.fail_reason or "no reason recorded: its worker was killed or interrupted")
                     for t, r in recs if t.state == S.FAIL],
    }
    out.unfinished |= {t.number for t in trials if t.state in (S.RUNNING, S.WAITING)}
    return out


def _companion_trials(storage, name: str) -> list:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # a study of an earlier version (no rungs), or no baselines
        return []


def write_report(config: SearchConfig) -> SearchResult:
    """Write the run folder from what the storage holds now (also ``--report-only``); returns the front and
    baselines. The proxy description and dataset source are those stored with the study."""
    study = load_existing_study(open_storage(config.storage, heartbeat_interval=None), config.study_name)
    config = config.scored_as_stored(study)
    claim_run_folder(config.out_dir, config.study_name, study.user_attrs.get(StudyKeys.UID))
    got = collect(config, study)
    data = StudyData.of(study)
    label = latency_label(config.device)
    rungs = sorted(set(got.by_rung) | set(got.baselines_by_rung))
    fidelity = {r: next((c.fidelity for c in got.by_rung.get(r, {}).values()), None) for r in rungs}
    meta = {
        "study": config.study_name, "storage": redact_url(config.storage_url), "device": config.device,
        "dataset": config.dataset, "dataset_source": data.source if data else "", "resolution": config.resolution,
        "sampler": config.sampler, "seed": config.seed, "proxy": config.proxy,
        "proxy_description": data.proxy if data else "", "latency_max": config.latency_max,
        "rungs": [(r, len(got.by_rung.get(r, {})), fidelity[r]) for r in rungs], "seed_sd": got.seed_sd(),
        **got.counts,
    }
    front, baselines, candidates, verdicts = got.front(), got.baselines(), got.highest(), got.verdicts()
    front, baselines = _with_latency_errors(config, front), _with_latency_errors(config, baselines)
    files = write_run_folder(config.out_dir, candidates=candidates, front=front, baselines=baselines,
                             verdicts=verdicts, meta=meta, metric=config.metric,
                             accuracy_column=config.scoring.accuracy_column, latency_label=label)
    _prune_weights(config, front, got.unfinished)
    return SearchResult(front=front, baselines=baselines, candidates=candidates, files=files,
                        latency_label=label, verdicts=verdicts, scoring=config.scoring)


def _with_latency_errors(config: SearchConfig, shown: Sequence[Candidate]) -> list[Candidate]:
    """The candidates shown in the report, each with how far to trust its latency (the error of the
    calibration family its network resembles, on a predicted device)."""
    return [dataclasses.replace(c, latency_error=latency_error(config.device, c.genome, c.latency_resolution))
            for c in shown]


def _prune_weights(config: SearchConfig, front: Sequence[Candidate], unfinished: set[int]) -> None:
    """Delete this run folder's proxy weights of finished candidates that ended off the front."""
    keep = {Path(c.weights).name for c in front if c.weights} | {f"trial_{n}.safetensors" for n in unfinished}
    wdir = config.out_dir / "weights"
    if not wdir.is_dir():
        return
    for p in wdir.glob("trial_*.safetensors"):
        if p.name not in keep:
            p.unlink(missing_ok=True)
