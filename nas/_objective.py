"""Scoring one evaluation: a candidate at rung 0 (sampled), a promoted candidate or a seed baseline (queued).

Every evaluation trains from scratch at its rung's budget (no weights carried over from the rung below): the
proxy's schedule warms up and decays the learning rate to zero over the whole budget, so a lower rung's final
weights were annealed for a shorter run and its images are a subset of the next rung's; continuing from them
would score "short schedule, then a restart" rather than the longer recipe the fidelity benchmark measured.
Retraining costs ``1 + 1/eta + 1/eta^2 ...`` of the top rung alone, at most 1.5x for the default ``eta=3``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space import atomic_path

from ._config import Rung, SearchConfig
from ._record import BASELINE_PARAM, LATENCY_CONSTRAINT, TrialRecord, clear_inherited, eval_key, set_attrs
from ._report import is_dominated

__all__ = ["Evaluator", "Score", "candidate_objective", "queued_objective", "train_device"]

_logger = logging.getLogger(__name__)


def train_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; an explicit CUDA device must exist."""
    import torch

    from ._errors import SearchConfigError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SearchConfigError(f"--train-device {name}: no CUDA GPU is visible here")
    return name


@dataclass
class Score:
    """One evaluation's outcome: its first objective value (the mean over its seeds of the accuracy, or of minus
    the validation loss, or a zero-cost score), each seed's accuracy and loss, and training facts."""

    value: float
    seeds: list[int]
    accuracies: list[float] | None = None
    losses: list[float] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    state_dict: dict | None = None

    def record_fields(self) -> dict[str, Any]:
        """The :class:`~nas._record.TrialRecord` fields of this outcome (the spreads only with two seeds or more)."""
        out: dict[str, Any] = {"seeds": self.seeds}
        for key, sd_key, vals in (("accuracies", "accuracy_sd", self.accuracies), ("losses", "loss_sd", self.losses)):
            if vals is not None:
                out[key] = vals
                if len(vals) > 1:
                    out[sd_key] = statistics.stdev(vals)
        return {**out, **{k: v for k, v in self.info.items() if v is not None}}


class Evaluator:
    """Scores a genome at a rung with the configured proxy (identical for candidates and baselines)."""

    def __init__(self, config: SearchConfig, table, data=None) -> None:
        from . import _data

        self.config = config
        self.table = table
        self.data = data if data is not None else _data.load_dataset(config.dataset, data_dir=config.data_dir,
                                                                     seed=config.seed)
        self.device = train_device(config.train_device)
        self.ladder = config.ladder()

    @property
    def keeps_weights(self) -> bool:
        """Trained weights fit the real genome (for ``nas.export``) only when the proxy trained it at full width."""
        return self.config.proxy == "train" and self.config.proxy_config().width_multiplier == 1.0

    def score(self, genome, rung: Rung, *, keep_weights: bool) -> Score:
        if self.config.proxy == "zero-cost":
            from ._zerocost import zero_cost_score

            t0 = time.perf_counter()
            s = float(zero_cost_score(genome, self.data, method=self.config.zero_cost_method,
                                      resolution=self.config.proxy_config(rung).resolution, seed=self.config.seed))
            return Score(s, [self.config.seed], info={"seconds": round(time.perf_counter() - t0, 3)})
        from ._proxy import train_proxy

        results = [train_proxy(genome, self.data, config=self.config.proxy_config(rung), device=self.device,
                               seed=seed, keep_weights=keep_weights and i == 0) for i, seed in enumerate(rung.seeds)]
        accs, losses = [float(r.accuracy) for r in results], [float(r.loss) for r in results]
        first = results[0]
        info = {"seconds": round(sum(r.seconds for r in results), 3), "epochs_run": first.epochs_run,
                "stopped_early": any(r.stopped_early for r in results), "stop_reason": first.stop_reason,
                "num_params": first.num_params, "loss": statistics.fmean(losses)}
        value = statistics.fmean(accs) if self.config.scoring.is_accuracy else -statistics.fmean(losses)
        return Score(value, list(rung.seeds), accs, losses, info, first.state_dict)


def candidate_objective(config: SearchConfig, evaluator: Evaluator, studies, *, deadline: float | None = None,
                        stop=None):
    """The objective of the search study: a sampled candidate's evaluation at rung 0."""
    import optuna

    from ._claims import claim
    from ._pricing import space

    space_ = space(config)
    rung = evaluator.ladder[0]

    def objective(trial: optuna.trial.Trial) -> tuple[float, float]:
        _started(trial, studies.search)
        genome = space_.suggest(trial)
        set_attrs(trial, genome=genome.to_dict(), rung=0, candidate=trial.number, fidelity=rung.fidelity or None)
        lat = _price(config, evaluator, trial, genome, config.resolution)
        # a genome already scored (or being scored by another worker) is never trained again, and no worker
        # starts a trial once the COMPLETE and in-flight trials reach the target
        c = claim(studies.search, trial, eval_key(genome.key(), 0), target=config.trials, deadline=deadline,
                  cancelled=lambda: stop is not None and stop.requested)
        if not c.go:
            _skip(trial, c)
        return _evaluate(config, evaluator, studies, trial, genome, rung, lat, candidate=trial.number, stop=stop)

    return objective


def queued_objective(config: SearchConfig, evaluator: Evaluator, studies, *, baselines: bool, stop=None):
    """The objective of a queue study (promoted candidates, or baselines): evaluate what the trial was queued
    with (its genome or zoo name, and its rung)."""
    import optuna

    from search_space import Genome, InvalidGenomeError, zoo

    from ._claims import claim

    handle = studies.baselines if baselines else studies.rungs

    def objective(trial: optuna.trial.Trial) -> tuple[float, float]:
        _started(trial, handle)
        rec = TrialRecord.from_trial(trial)
        if rec.genome_key is None or rec.rung is None:  # nothing was left queued (another worker took it)
            set_attrs(trial, skipped="nothing queued")
            raise optuna.TrialPruned("nothing queued")
        rung = evaluator.ladder[rec.rung]
        if baselines:
            trial.suggest_categorical(BASELINE_PARAM, sorted(zoo))
            genome = zoo[rec.baseline]
            res = config.resolution
            try:
                genome.with_resolution(res)
            except InvalidGenomeError:
                res = genome.resolution  # e.g. MobileViT at 256 where 224 does not divide into its patches
        else:
            genome, res = Genome.from_dict(rec.genome), config.resolution
        c = claim(handle, trial, rec.genome_key)  # each (item, rung) is scored once, whoever queued it
        if not c.go:
            _skip(trial, c)
        set_attrs(trial, genome=genome.to_dict(), fidelity=rung.fidelity or None)
        lat = _price(config, evaluator, trial, genome, res)
        return _evaluate(config, evaluator, studies, trial, genome, rung, lat, candidate=rec.candidate,
                         baseline=rec.baseline, stop=stop)

    return objective


def _started(trial, handle) -> None:
    """The first thing every objective does: write the trial's first heartbeat now (Optuna's heartbeat thread
    writes it a moment later, and a trial killed before that has no heartbeat and is never failed as stale), then
    mark the trial as started by this process (a RUNNING trial without the mark never got this far and is failed
    by :meth:`nas._studies.Handle.fail_unstarted`), and clear what a heartbeat retry inherited from its failed
    original."""
    handle.record_heartbeat(trial.number)
    set_attrs(trial, worker_pid=os.getpid())
    clear_inherited(trial)


def _price(config: SearchConfig, evaluator: Evaluator, trial, genome, resolution: int) -> float:
    """Latency of ``genome`` on the search device; records it, the budget constraint and rejects far violators."""
    import optuna

    from latency_lut import predict_latency

    from ._pricing import latency_source

    lat = predict_latency(genome, config.device, resolution, db=evaluator.table)
    set_attrs(trial, latency_ms=lat, latency_source=latency_source(config.device), latency_resolution=resolution)
    if config.latency_max is not None:
        if LATENCY_CONSTRAINT not in (trial.constraints or {}):  # a retry inherits its original's constraint
            trial.set_constraint(LATENCY_CONSTRAINT, lat - config.latency_max)
        set_attrs(trial, feasible=lat <= config.latency_max)
        if lat > config.reject_factor * config.latency_max:
            reason = (f"rejected before training: {lat:.3f} ms > {config.reject_factor:g} x the "
                      f"{config.latency_max:g} ms budget")
            set_attrs(trial, rejected=reason)
            raise optuna.TrialPruned(reason)
    return lat


def _evaluate(config: SearchConfig, evaluator: Evaluator, studies, trial, genome, rung: Rung, lat: float, *,
              candidate: int | None, baseline: str | None = None, stop=None) -> tuple[float, float]:
    """Train (or score) at ``rung``, record the outcome, keep the weights of a top-rung candidate that is not
    dominated so far; the trial's values."""
    keep = rung.top and baseline is None and evaluator.keeps_weights
    try:
        with stop.armed() if stop is not None else contextlib.nullcontext():
            s = evaluator.score(genome, rung, keep_weights=keep)
    except Exception as e:
        set_attrs(trial, fail_reason=f"{type(e).__name__}: {e}")
        raise
    set_attrs(trial, **s.record_fields())
    if keep and s.state_dict is not None and not is_dominated((s.value, lat), _top_points(studies, rung)):
        path = (config.out_dir / "weights" / f"trial_{candidate}.safetensors").resolve()
        _save_weights(s.state_dict, path)
        set_attrs(trial, weights=str(path))
    if baseline is not None:
        _logger.info("baseline %s at rung %d: %s %.4f, latency %.3f ms", baseline, rung.index, config.metric,
                     s.value, lat)
    return s.value, lat


def _top_points(studies, rung: Rung) -> list[tuple[float, float]]:
    """(score, latency) of the feasible candidates already complete at the top rung."""
    import optuna

    handle = studies.search if rung.index == 0 else studies.rungs
    out = []
    for t, r in handle.records((optuna.trial.TrialState.COMPLETE,)):
        if t.values and r.rung_or_zero == rung.index and r.counts_as_feasible:
            out.append((t.values[0], t.values[1]))
    return out


def _skip(trial, c) -> None:
    """End ``trial`` without training: a duplicate of trial ``c.of``, or not needed (the target is met)."""
    import optuna

    if c.verdict == "duplicate":
        set_attrs(trial, duplicate_of=c.of)
        raise optuna.TrialPruned(f"duplicate of trial {c.of}: not trained again")
    if c.verdict == "stopped":
        set_attrs(trial, skipped="the deadline passed (or Ctrl-C came) while this trial waited for a free slot")
        raise optuna.TrialPruned("stopped while waiting")
    set_attrs(trial, skipped="the study reached its target while this trial waited")
    raise optuna.TrialPruned("target reached")


def _save_weights(state_dict: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
