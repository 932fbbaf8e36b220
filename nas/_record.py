"""The typed record of one evaluation, and the only code that knows the Optuna attribute keys.

A search stores everything about a trial in Optuna user attributes (the dashboard shows them, every worker and
every later command reads them). :class:`TrialRecord` names each one as a typed field: the search writes through
:func:`set_attrs` (keyword arguments, so a misspelt key is a ``TypeError``, not a silent new attribute), and the
report, ``--report-only`` and ``nas.export`` read through :meth:`TrialRecord.from_trial`. The study-level keys
(:class:`StudyKeys`) live here too.

Trials of one search live in three studies (see :mod:`nas._studies`): ``<study>`` holds every candidate's
first evaluation at rung 0 (what the sampler learns from), ``<study>:rungs`` the promoted evaluations of
candidates at higher rungs, and ``<study>:baselines`` the seed zoo models at every rung they reach.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BASELINE_PARAM", "LATENCY_CONSTRAINT", "RESET_ON_RETRY", "StudyKeys", "TrialRecord", "eval_key",
           "StudyData", "clear_inherited", "set_attrs"]

BASELINE_PARAM = "baseline"
"""The Optuna parameter of a baseline trial (its zoo name, so the dashboard's parameter plots show it)."""
LATENCY_CONSTRAINT = "latency_ms"
"""The ``Trial.set_constraint`` name of the latency budget."""


class StudyKeys:
    """Study-level user attributes."""

    UID = "repnas_uid"
    """A unique id of the study (run folders are bound to it)."""
    CONFIG = "repnas_config"
    """The settings the study is bound to (:meth:`SearchConfig.identity`)."""
    DATA = "repnas_data"
    """What the proxy trained on (dataset summary and proxy description, for ``nas.export``)."""
    ENQUEUED = "enqueued"
    """Set on a queue study (baselines) once its creator has enqueued every item."""


@dataclass(frozen=True)
class StudyData:
    """What the proxy trained on, stored with the search study (:attr:`StudyKeys.DATA`) and read by the report and
    ``nas.export``: the dataset's :meth:`~nas.ProxyData.describe` summary plus how candidates were scored.

    Attributes:
        name, num_classes, mean, std, source: From the dataset summary (the rest of it is kept in ``rest``).
        proxy: One line on how candidates are scored (the rungs, the proxy recipe).
        proxy_resolution: Training resolution of the proxy (None for studies that did not record it).
    """

    name: str
    num_classes: int
    mean: list[float]
    std: list[float]
    source: str = ""
    proxy: str = ""
    proxy_resolution: int | None = None
    rest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StudyData:
        known = {f.name for f in dataclasses.fields(cls)} - {"rest"}
        return cls(**{k: v for k, v in attrs.items() if k in known},
                   rest={k: v for k, v in attrs.items() if k not in known})

    def to_attrs(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {**d.pop("rest"), **d}

    @classmethod
    def of(cls, study) -> StudyData | None:
        """The study's record, or None when it has none (a study of an earlier version)."""
        attrs = study.user_attrs.get(StudyKeys.DATA)
        return cls.from_attrs(attrs) if attrs else None

    def mean_std_rgb(self) -> tuple[list[float], list[float]]:
        """Mean and std per channel, a one-channel dataset's repeated to three (what the exported model reads)."""
        def rgb(v: list[float]) -> list[float]:
            return list(v) * 3 if len(v) == 1 else list(v)

        return rgb(self.mean), rgb(self.std)


@dataclass(frozen=True)
class TrialRecord:
    """Every user attribute RepNAS stores on a trial, typed; fields that a trial lacks are None.

    Attributes:
        genome: The genome as :meth:`Genome.to_dict` (set before training, so failures show it too).
        genome_key: The key the evaluation claimed (:mod:`nas._claims`, see :func:`eval_key`).
        claim: The claim mark of a RUNNING trial (``[trial number, key]``; None once it stepped back).
        rung: Fidelity rung of this evaluation (0 = cheapest; the dashboard filters by it).
        fidelity: Training images seen at this rung (images x epochs; None for a zero-cost score).
        candidate: Number of the candidate's rung-0 trial in the search study (promoted evaluations; rung-0
            trials are their own candidate).
        baseline: Zoo name of a seed baseline evaluation.
        seeds: Proxy-training seeds of this evaluation (the top rung trains at least two).
        accuracies: Validation accuracy of each seed, in the order of ``seeds`` (trained proxies only).
        accuracy_sd: Sample standard deviation of ``accuracies`` (None with one seed).
        losses: Validation loss (cross-entropy) of each seed, in the order of ``seeds`` (trained proxies only).
        loss_sd: Sample standard deviation of ``losses`` (None with one seed).
            The trial's first value is the mean of what ``--proxy-score`` names: the accuracies, or minus the
            losses; a zero-cost trial's value is its score (:class:`nas._config.Scoring` reads them).
        latency_ms, latency_source, latency_resolution: Latency on the search device, how it was obtained
            (``measured``, ``predicted``, ``imported``) and at which resolution.
        feasible: Within ``--latency-max`` (None: no budget).
        rejected: Why the trial was not trained (far over the budget).
        duplicate_of: The trial that already scored this key.
        skipped: Why a trial ended without training (the study reached its target).
        fail_reason: The error that failed the trial.
        seconds, epochs_run, stopped_early, stop_reason, num_params: From proxy training.
        loss: Mean of ``losses``.
        weights: Path of the trained weights (safetensors) kept for export.
        worker_pid: Process that ran the trial.
    """

    genome: dict[str, Any] | None = None
    genome_key: str | None = None
    claim: list | None = None
    rung: int | None = None
    fidelity: int | None = None
    candidate: int | None = None
    baseline: str | None = None
    seeds: list[int] | None = None
    accuracies: list[float] | None = None
    accuracy_sd: float | None = None
    losses: list[float] | None = None
    loss_sd: float | None = None
    latency_ms: float | None = None
    latency_source: str | None = None
    latency_resolution: int | None = None
    feasible: bool | None = None
    rejected: str | None = None
    duplicate_of: int | None = None
    skipped: str | None = None
    fail_reason: str | None = None
    seconds: float | None = None
    epochs_run: float | None = None
    stopped_early: bool | None = None
    stop_reason: str | None = None
    num_params: int | None = None
    loss: float | None = None
    weights: str | None = None
    worker_pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """User attributes this version does not know (kept, never interpreted)."""

    @classmethod
    def from_trial(cls, trial) -> TrialRecord:
        """The record of an ``optuna.trial.FrozenTrial`` (or ``Trial``): its user attributes, typed."""
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> TrialRecord:
        known = {k: v for k, v in attrs.items() if k in _FIELDS}
        return cls(**known, extra={k: v for k, v in attrs.items() if k not in _FIELDS})

    def to_attrs(self) -> dict[str, Any]:
        """The user attributes to store (fields that are None are left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "extra" and v is not None}

    # -- derived ---------------------------------------------------------------------------------------------
    @property
    def rung_or_zero(self) -> int:
        """The rung (trials of earlier versions, which had one fidelity, are rung 0)."""
        return self.rung or 0

    @property
    def n_seeds(self) -> int:
        return len(self.seeds) if self.seeds else 1

    @property
    def mean_accuracy(self) -> float | None:
        """Mean validation accuracy over the seeds (None: a zero-cost trial, or one of a version that did not
        record them)."""
        return sum(self.accuracies) / len(self.accuracies) if self.accuracies else None

    @property
    def is_skip(self) -> bool:
        """Ended without training anything (a duplicate, or not needed)."""
        return self.duplicate_of is not None or self.skipped is not None

    @property
    def counts_as_feasible(self) -> bool:
        return self.feasible is not False


_FIELDS = frozenset(f.name for f in dataclasses.fields(TrialRecord)) - {"extra"}


def set_attrs(trial, **fields: Any) -> None:
    """Store record fields on a live ``optuna.Trial`` (an unknown field name is a ``TypeError``)."""
    unknown = set(fields) - _FIELDS
    if unknown:
        raise TypeError(f"unknown trial record field(s): {', '.join(sorted(unknown))}")
    for k, v in fields.items():
        trial.set_user_attr(k, v)


RESET_ON_RETRY = ("duplicate_of", "skipped", "fail_reason", "rejected", "weights", "seeds", "accuracies",
                  "accuracy_sd", "losses", "loss_sd", "seconds", "epochs_run", "stopped_early", "stop_reason", "loss")
"""Outcome fields a heartbeat retry inherits from its failed original (Optuna copies user attributes); every
objective clears them first, so a retry never shows its original's results."""


def clear_inherited(trial) -> None:
    """Clear the :data:`RESET_ON_RETRY` fields a retried ``trial`` carries (nothing to do on a fresh trial)."""
    for k in RESET_ON_RETRY:
        if trial.user_attrs.get(k) is not None:
            trial.set_user_attr(k, None)


def eval_key(base: str, rung: int) -> str:
    """The claim key of evaluating ``base`` (a genome key, or ``baseline:<name>``) at ``rung``.

    Rung 0 keeps the bare key that versions before the rungs used, so their trials read the same way.
    """
    return base if rung == 0 else f"{base}@rung{rung}"
