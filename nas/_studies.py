"""The three Optuna studies of one search, the settings they are bound to, and their queues.

- ``<study>``: every candidate's first evaluation, at rung 0, proposed by the sampler. The sampler learns from
  these alone: all of them are measured at one fidelity, while higher rungs hold only the promoted few, trained
  longer (mixing them would rank a candidate trained three times longer above better ones trained less).
- ``<study>:rungs``: the promoted evaluations (rung 1 and up), enqueued as trials carrying their genome, rung
  and candidate, so each (candidate, rung) is one trial that exactly one worker pops.
- ``<study>:baselines``: the seed zoo models at every rung they reach, enqueued the same way (rung 0 by the
  command that creates the study, once).

Every worker opens the same three; Optuna hands each WAITING trial to exactly one of them, and the claims of
:mod:`nas._claims` keep a key from being scored twice when two workers enqueue the same promotion.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._config import ACCURACY_SCORE, BASELINE_SUFFIX, RUNGS_SUFFIX, SearchConfig
from ._errors import SearchConfigError, StudyStorageError
from ._record import BASELINE_PARAM, StudyKeys, TrialRecord
from ._storage import first_error_line, open_storage, redact_url

__all__ = ["Handle", "Studies", "open_studies"]

_logger = logging.getLogger(__name__)
DIRECTIONS = ("maximize", "minimize")
MAX_ATTEMPTS = 2
"""A queued evaluation that failed this many times is not queued again (a deterministic failure stays failed)."""


@dataclass
class Handle:
    """An opened study with the storage it lives in (read past Optuna's trial cache when it matters)."""

    study: Any
    storage: Any

    def __post_init__(self) -> None:
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)

    def trials(self, states=None, *, fresh: bool = False) -> list:
        """The study's trials; ``fresh`` reads the database itself (Optuna's cache can miss a trial whose insert
        committed after a later-numbered trial had finished, and a claim must see every trial)."""
        if fresh:
            return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)
        return self.study.get_trials(deepcopy=False, states=states)

    def records(self, states=None, *, fresh: bool = False) -> list[tuple[Any, TrialRecord]]:
        return [(t, TrialRecord.from_trial(t)) for t in self.trials(states, fresh=fresh)]

    def fail_stale(self) -> None:
        """Fail (and, with the retry callback, re-queue) RUNNING trials whose heartbeat went stale."""
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def queue_state(self) -> tuple[set[str], dict[str, int]]:
        """The keys that are COMPLETE, RUNNING or WAITING here, and how many times each key FAILED."""
        import optuna

        S = optuna.trial.TrialState
        present: set[str] = set()
        failed: dict[str, int] = {}
        for t, r in self.records(fresh=True):
            if r.genome_key is None:
                continue
            if t.state in (S.COMPLETE, S.RUNNING, S.WAITING):
                present.add(r.genome_key)
            elif t.state == S.FAIL:
                failed[r.genome_key] = failed.get(r.genome_key, 0) + 1
        return present, failed

    def enqueue(self, record: TrialRecord, params: dict[str, Any] | None = None, *, state=None) -> bool:
        """Queue an evaluation unless its key is complete, running or queued here, or already failed
        ``MAX_ATTEMPTS`` times; True if queued. A key whose copies all stepped back as duplicates of each other
        (two workers promoting at once) or whose evaluation failed (Ctrl-C, a killed worker past its retry, an
        out-of-memory error) is queued again. ``state``: a :meth:`queue_state` read once for several calls."""
        present, failed = state if state is not None else self.queue_state()
        key = record.genome_key
        if key in present or failed.get(key, 0) >= MAX_ATTEMPTS:
            return False
        self.study.enqueue_trial(params or {}, user_attrs=record.to_attrs())
        present.add(key)
        return True

    def record_heartbeat(self, number: int) -> None:
        """Write trial ``number``'s heartbeat now (a storage without heartbeats: nothing to do)."""
        interval = getattr(self.storage, "get_heartbeat_interval", lambda: None)()
        if interval is not None:  # RDBStorage opened with heartbeats (its public heartbeat API)
            self.storage.record_heartbeat(self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number))

    def fail_unstarted(self, grace_seconds: float) -> int:
        """FAIL RUNNING trials that never started their objective (their worker died between Optuna's ``ask`` and
        the heartbeat, so the heartbeat never fails them) once they are ``grace_seconds`` old; how many."""
        import datetime as dt

        import optuna

        now = dt.datetime.now()
        n = 0
        for t, r in self.records((optuna.trial.TrialState.RUNNING,), fresh=True):
            if r.worker_pid is None and t.datetime_start is not None and \
                    (now - t.datetime_start).total_seconds() > grace_seconds:
                tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
                if self.storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL):
                    n += 1
        return n

    def waiting(self) -> int:
        import optuna

        return len(self.trials((optuna.trial.TrialState.WAITING,), fresh=True))


@dataclass
class Studies:
    """The opened studies of one search (``baselines`` None without baselines) and what opening them found."""

    search: Handle
    rungs: Handle
    baselines: Handle | None
    created: bool
    uid: str

    def all(self) -> list[Handle]:
        return [h for h in (self.search, self.rungs, self.baselines) if h is not None]


def open_studies(config: SearchConfig, worker: int, *, fresh_seeds: bool = False) -> Studies:
    """Create or load the search study and its companions (enqueueing the baselines exactly once).

    The command that creates the study gets the sampler seed ``--seed`` (plus ``1000 * worker`` for local
    workers, also when ``fresh_seeds`` says their parent created it): a fresh search is reproducible. Every
    other command (a resume, a second machine, a second copy started at the same moment) gets a sampler
    stream of its own, so that no two workers propose the same sequence of genomes.
    """
    storage = open_storage(config.storage, heartbeat_interval=config.heartbeat_interval,
                           grace_period=config.grace_period)
    study, created = _create_or_load(config, storage, config.study_name)
    uid = _bind_identity(config, study, created, storage.get_study_id_from_name(study.study_name))
    seed = _sampler_seed(config, worker, reproducible=created or fresh_seeds)
    study.sampler = make_sampler(config, seed)
    _logger.debug("worker %d: sampler %s, seed %d", worker, config.sampler, seed)
    rungs, _ = _create_or_load(config, storage, config.study_name + RUNGS_SUFFIX)
    baselines = _open_baselines(config, storage) if config.baselines else None
    return Studies(search=Handle(study, storage), rungs=Handle(rungs, storage),
                   baselines=None if baselines is None else Handle(baselines, storage), created=created, uid=uid)


def _create_or_load(config: SearchConfig, storage, name: str):
    import optuna

    try:
        try:
            study = optuna.create_study(storage=storage, study_name=name, directions=list(DIRECTIONS))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([config.metric.replace(" ", "_"), f"latency_ms_{config.device}"])
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(study_name=name, storage=storage), False
    except Exception as e:  # noqa: BLE001 - database errors of any driver
        raise StudyStorageError(f"cannot create or load study {name!r} in {redact_url(config.storage_url)}: "
                                f"{first_error_line(e, config.storage_url)}") from None


def _bind_identity(config: SearchConfig, study, created: bool, study_id: int) -> str:
    """Store the settings (and a unique id) with a new study; refuse to resume one with other settings."""

    ident = config.identity()
    if created:
        study.set_user_attr(StudyKeys.UID, uuid.uuid4().hex)
        study.set_user_attr(StudyKeys.CONFIG, ident)
    attrs = wait_for(lambda: study.user_attrs if StudyKeys.CONFIG in study.user_attrs else None)
    if attrs is None:  # a study of an older version, or its creator died before storing the settings
        study.set_user_attr(StudyKeys.CONFIG, ident)
        attrs = study.user_attrs
    stored = upgrade_identity(attrs[StudyKeys.CONFIG])
    if {k: stored.get(k) for k in ident} != ident:
        diff = {k: (stored.get(k), ident[k]) for k in ident if stored.get(k) != ident[k]}
        raise SearchConfigError(
            f"study {study.study_name!r} in {redact_url(config.storage_url)} was created with other settings "
            + ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in diff.items())
            + "; resume it with the same options or choose another --study")
    uid = attrs.get(StudyKeys.UID)
    if not uid:  # every worker derives the same id for a study that has none
        import hashlib

        uid = hashlib.sha256(f"{study.study_name}:{study_id}".encode()).hexdigest()[:32]
        study.set_user_attr(StudyKeys.UID, uid)
    return uid


def upgrade_identity(stored: dict[str, Any]) -> dict[str, Any]:
    """A study identity stored by an earlier version in today's form.

    The first versions stored ``epochs`` and ``proxy_resolution`` instead of the whole ``proxy_config``; every
    version before the rungs trained one fidelity (one rung of ``train_size`` images, one seed); every version
    before ``proxy_score`` ranked trained candidates by accuracy.
    """
    from ._proxy import ProxyConfig

    out = dict(stored)
    if "proxy_config" not in out and "epochs" in out:
        over = {"epochs": out.pop("epochs"), "resolution": out.pop("proxy_resolution", None)}
        pc = dataclasses.replace(ProxyConfig(), **{k: v for k, v in over.items() if v is not None})
        out["proxy_config"] = pc.to_dict()
    if "rungs" not in out and "proxy_config" in out:
        train = out.get("proxy") == "train"
        out.update(rungs=[out["proxy_config"].get("train_size") if train else 0], eta=None, top_seeds=1)
    if "proxy_score" not in out and "proxy" in out:
        out["proxy_score"] = ACCURACY_SCORE if out["proxy"] == "train" else None
    return out


def wait_for(get: Callable[[], Any], timeout: float = 15.0, step: float = 0.2):
    """Poll ``get()`` until it returns something other than None (another worker finishing a first write)."""
    end = time.monotonic() + timeout
    while True:
        value = get()
        if value is not None or time.monotonic() >= end:
            return value
        time.sleep(step)


def _open_baselines(config: SearchConfig, storage):
    """The ``<study>:baselines`` companion; its creator enqueues every zoo model at rung 0 once, the others wait
    for that."""
    from search_space import zoo

    from ._record import eval_key

    bstudy, created = _create_or_load(config, storage, config.study_name + BASELINE_SUFFIX)
    rung0 = config.ladder()[0]

    def enqueue(names) -> None:
        for name in names:
            rec = TrialRecord(baseline=name, rung=0, genome_key=eval_key(f"baseline:{name}", 0),
                              fidelity=rung0.fidelity or None)
            bstudy.enqueue_trial({BASELINE_PARAM: name}, user_attrs=rec.to_attrs())
        bstudy.set_user_attr(StudyKeys.ENQUEUED, sorted(zoo))

    if created:  # this worker created it: it alone enqueues the baselines
        enqueue(sorted(zoo))
    elif wait_for(lambda: bstudy.user_attrs.get(StudyKeys.ENQUEUED)) is None:  # its creator died enqueueing
        have = {TrialRecord.from_trial(t).baseline for t in bstudy.get_trials(deepcopy=False)}
        enqueue(sorted(set(zoo) - have))
    return bstudy


def _sampler_seed(config: SearchConfig, worker: int, *, reproducible: bool) -> int:
    """``--seed + 1000 * worker`` for the workers of a fresh study; otherwise a stream no other worker shares."""
    if reproducible:
        return config.seed + 1000 * worker
    import numpy as np

    entropy = np.random.SeedSequence().entropy  # fresh OS entropy, mixed with the user's seed and the worker
    return int(np.random.SeedSequence([config.seed, worker, entropy]).generate_state(1)[0])


def make_sampler(config: SearchConfig, seed: int):
    import optuna

    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=config.population, seed=seed)
    if config.sampler == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                              n_startup_trials=min(10, max(4, config.trials // 3)))
    return optuna.samplers.RandomSampler(seed=seed)
