"""Workers: each one runs evaluations against the shared studies until the search is done.

A worker repeatedly takes the most useful evaluation it can start (ASHA's order): a promoted evaluation waiting
in ``<study>:rungs`` (the oldest first: Optuna hands out queued trials in order), else a waiting seed baseline,
else a new candidate at rung 0 while the search study holds fewer than ``--trials`` of them. After every
evaluation it promotes what the finished rung now ranks in its top 1/eta (:mod:`nas._rungs`). When nothing can
start it waits for the other workers' evaluations in flight (they may promote more), and stops once nothing is
running or queued anywhere. ``--timeout`` is honoured at rung granularity: an evaluation starts only if the
median duration of its rung so far (else of the rung below, scaled by training images x seeds) fits before the
deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import statistics
import time

from ._claims import claimed_key
from ._config import SearchConfig
from ._objective import Evaluator, candidate_objective, queued_objective
from ._record import BASELINE_PARAM, TrialRecord, eval_key
from ._rungs import to_promote
from ._storage import scrub
from ._studies import Handle, Studies, open_studies

__all__ = ["default_threads", "quiet_interrupted_trials", "run_local_workers", "run_worker"]

_logger = logging.getLogger(__name__)
POLL_SECONDS = 2.0
"""How often a worker with nothing to start looks again while other workers' evaluations are in flight."""


def run_worker(config: SearchConfig, *, worker: int = 0, progress: bool = True, data=None,
               fresh_seeds: bool = False) -> int:
    """One worker: evaluate until nothing is left to start or queued (see the module docstring).

    ``config`` must be resolved (:meth:`SearchConfig.for_train_device`); ``fresh_seeds``: the parent process
    created the study for this run (see :func:`nas._studies.open_studies`).

    Returns:
        The number of evaluations this worker ran.

    Raises:
        KeyboardInterrupt: on SIGINT, at once or, if the signal landed where Python could not raise it, after
            the evaluation in flight.
    """
    import optuna
    import torch

    from ._objective import train_device
    from ._pricing import check_device
    from ._record import StudyData, StudyKeys
    from ._report import claim_run_folder

    t_start = time.monotonic()
    if not config.resolved:
        config = config.for_train_device(train_device(config.train_device))
    torch.set_num_threads(config.threads or default_threads(config.workers))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _, table = check_device(config)
    studies = open_studies(config, worker, fresh_seeds=fresh_seeds)
    claim_run_folder(config.out_dir, config.study_name, studies.uid)
    evaluator = Evaluator(config, table, data)
    study = studies.search.study
    if StudyData.of(study) is None:  # what the report and an export need to describe the weights
        data = StudyData.from_attrs({**evaluator.data.describe(), "proxy_resolution": config.proxy_config().resolution,
                                     "proxy": describe_proxy(config)})
        study.set_user_attr(StudyKeys.DATA, data.to_attrs())
    deadline = None if config.timeout is None else t_start + config.timeout
    with _StopOnSigint() as stop:
        return _Scheduler(config, evaluator, studies, deadline, stop, progress).run()


def describe_proxy(config: SearchConfig) -> str:
    """One line on how candidates are scored (stored with the study; shown in the report)."""
    pc = config.proxy_config()
    if config.proxy == "zero-cost":
        return f"the {config.zero_cost_method} zero-cost score at {pc.resolution}px (no training)"
    shown = ", ".join(f"{f.name}={getattr(pc, f.name)}" for f in dataclasses.fields(pc)
                      if getattr(pc, f.name) is not None and f.name != "train_size")
    ladder = config.ladder()
    rungs = ", ".join(f"rung {r.index}: {r.images:,} images x {r.epochs} epoch{'s' if r.epochs > 1 else ''}"
                      + (f", seeds {'+'.join(map(str, r.seeds))} averaged" if len(r.seeds) > 1 else "")
                      for r in ladder)
    ranked = "validation accuracy" if config.scoring.is_accuracy else "validation loss (lower is better)"
    return (f"short proxy training ({shown}) ranked by its {ranked}, successive halving with eta={config.eta} "
            f"over {len(ladder)} rung{'s' if len(ladder) > 1 else ''} ({rungs}), seed {config.seed}, retrained from "
            "scratch at each rung, identical for every candidate and baseline")


def _catch() -> tuple[type[BaseException], ...]:
    """Errors that fail one evaluation (reason recorded in the trial) while the search goes on: NaN, divergence,
    an invalid genome, a runtime error such as out-of-memory."""
    from search_space import InvalidGenomeError

    from ._errors import ProxyTrainingError

    return ProxyTrainingError, InvalidGenomeError, RuntimeError


class _Scheduler:
    """The loop of one worker (see the module docstring)."""

    def __init__(self, config: SearchConfig, evaluator: Evaluator, studies: Studies, deadline: float | None,
                 stop, progress: bool) -> None:
        self.config = config
        self.studies = studies
        self.ladder = evaluator.ladder
        self.deadline = deadline
        self.stop = stop
        self.guard = _RunawayGuard(config.trials)
        self.bar = _Progress(config, studies, progress)
        self.candidate = candidate_objective(config, evaluator, studies, deadline=deadline, stop=stop)
        self.promoted = queued_objective(config, evaluator, studies, baselines=False, stop=stop)
        self.baseline = queued_objective(config, evaluator, studies, baselines=True, stop=stop) \
            if studies.baselines is not None else None

    def run(self) -> int:
        ran = 0
        grace = self.config.grace_period or 2 * self.config.heartbeat_interval
        try:
            while not self.stop.requested and not self.guard.tripped:
                for h in self.studies.all():
                    h.fail_stale()  # a killed worker's evaluation is failed and re-queued
                    h.fail_unstarted(grace)  # ... also one killed before its heartbeat started
                step = self._next()
                if step == "done":
                    break
                if step == "wait":
                    time.sleep(POLL_SECONDS)
                    continue
                if step == "ran":
                    ran += 1
        finally:
            self.bar.close()
        self.stop.reraise()  # a real Ctrl-C only; the runaway guard just ends this worker
        return ran

    def _next(self) -> str:
        """Start the most useful evaluation that fits (``ran``), or say ``again`` (promotions were just queued),
        ``wait`` (other workers' evaluations may promote more) or ``done``."""
        import optuna

        S = optuna.trial.TrialState
        for handle, objective in ((self.studies.rungs, self.promoted), (self.studies.baselines, self.baseline)):
            if handle is not None and handle.waiting() and self._fits(handle):
                return self._run(handle, objective)
        search = self.studies.search.trials((S.COMPLETE, S.RUNNING), fresh=True)
        complete = sum(t.state == S.COMPLETE for t in search)
        in_flight = sum(t.state == S.RUNNING and claimed_key(t) is not None for t in search)
        if complete + in_flight < self.config.trials and self._fits(self.studies.search):
            return self._run(self.studies.search, self.candidate)
        if self._past_deadline():
            return "done"
        if any(h.trials((S.RUNNING,), fresh=True) for h in self.studies.all()):
            return "wait"
        return "again" if self._promote_all() else "done"

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _fits(self, handle: Handle) -> bool:
        """Whether the evaluation ``handle`` would run next (its oldest queued one, or a new rung-0 candidate) is
        expected to end before the deadline: the median seconds of the complete evaluations at its rung, else of
        the rung below scaled by the ratio of training images x seeds (nothing known: it fits)."""
        if self.deadline is None:
            return True
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        expected = self._expected_seconds(self._next_rung(handle))
        return expected is None or expected <= left

    def _next_rung(self, handle: Handle) -> int:
        import optuna

        waiting = handle.records((optuna.trial.TrialState.WAITING,), fresh=True)
        return min(waiting, key=lambda tr: tr[0].number)[1].rung_or_zero if waiting else 0

    def _expected_seconds(self, rung: int) -> float | None:
        import optuna

        for r in range(rung, -1, -1):
            secs = [rec.seconds for h in self.studies.all()
                    for _, rec in h.records((optuna.trial.TrialState.COMPLETE,))
                    if rec.seconds and rec.rung_or_zero == r]
            if secs:
                a, b = self.ladder[r], self.ladder[rung]
                scale = (b.fidelity * len(b.seeds)) / (a.fidelity * len(a.seeds)) if a.fidelity else 1.0
                return statistics.median(secs) * scale
        return None

    def _run(self, handle: Handle, objective) -> str:
        import optuna

        numbers: list[int] = []

        def tracked(trial):
            numbers.append(trial.number)
            return objective(trial)

        remaining = None if self.deadline is None else max(1.0, self.deadline - time.monotonic())
        handle.study.optimize(tracked, n_trials=1, catch=_catch(), timeout=remaining,
                              callbacks=[self.guard, self.stop], gc_after_trial=True)
        for t in (t for t in handle.trials() if t.number in numbers):
            if t.state == optuna.trial.TrialState.COMPLETE:
                self._promote(TrialRecord.from_trial(t).rung_or_zero)
        self.bar.update()
        return "ran"

    # -- promotion -------------------------------------------------------------------------------------------
    def _promote_all(self) -> int:
        """Promote from every rung; the number of evaluations queued."""
        return sum(self._promote(r) for r in range(len(self.ladder) - 1))

    def _promote(self, rung: int) -> int:
        """Queue the top 1/eta of ``rung``'s feasible complete evaluations at ``rung + 1``; how many were new.

        Candidates and seed baselines are ranked together, as if the baselines were candidates: a baseline
        reaches the next rung exactly when a candidate as good would.
        """
        if rung + 1 >= len(self.ladder):
            return 0
        items = self._rung_evaluations(rung)
        nxt = self.ladder[rung + 1]
        targets = {False: self.studies.rungs, True: self.studies.baselines}
        states = {b: h.queue_state() for b, h in targets.items() if h is not None}
        queued = 0
        for i in to_promote([p for _, p, _ in items], self.config.eta):
            base, _, r = items[i]
            baseline = r.baseline is not None
            rec = TrialRecord(genome=r.genome, genome_key=eval_key(base, nxt.index), rung=nxt.index,
                              fidelity=nxt.fidelity or None, baseline=r.baseline,
                              candidate=None if baseline else r.candidate)
            if targets[baseline].enqueue(rec, {BASELINE_PARAM: r.baseline} if baseline else None,
                                         state=states[baseline]):
                queued += 1
                _logger.debug("promoted %s to rung %d", r.baseline or f"trial {rec.candidate}", nxt.index)
        return queued

    def _rung_evaluations(self, rung: int) -> list[tuple[str, tuple[float, float], TrialRecord]]:
        """(rung-independent key, (score, latency), record) of every feasible complete evaluation at ``rung``,
        candidates and baselines, each key once."""
        import optuna

        sources = [self.studies.search if rung == 0 else self.studies.rungs, self.studies.baselines]
        seen: dict[str, tuple[str, tuple[float, float], TrialRecord]] = {}
        for handle in (h for h in sources if h is not None):
            for t, r in handle.records((optuna.trial.TrialState.COMPLETE,), fresh=True):
                if t.values and r.rung_or_zero == rung and r.counts_as_feasible and r.genome:
                    if r.baseline is None and r.candidate is None:
                        r = dataclasses.replace(r, candidate=t.number)  # a rung-0 trial of an earlier version
                    base = _base_key(r)
                    seen.setdefault(base, (base, (t.values[0], t.values[1]), r))
        return list(seen.values())


def _base_key(rec: TrialRecord) -> str:
    """The rung-independent key of an evaluation: ``baseline:<name>`` or the genome's key."""
    if rec.baseline is not None:
        return f"baseline:{rec.baseline}"
    from search_space import Genome

    return Genome.from_dict(rec.genome).key()


class _Progress:
    """A tqdm bar over rung-0 candidates with the evaluations done at the higher rungs."""

    def __init__(self, config: SearchConfig, studies: Studies, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.config = config
        self.studies = studies
        self.bar = tqdm(total=config.trials, initial=min(self._counts()[0], config.trials),
                        desc=f"search {config.device}", unit="candidate", disable=not enabled, dynamic_ncols=True)

    def _counts(self) -> dict[int, int]:
        import optuna

        counts: dict[int, int] = {0: 0}
        for h in (self.studies.search, self.studies.rungs):
            for _t, r in h.records((optuna.trial.TrialState.COMPLETE,)):
                counts[r.rung_or_zero] = counts.get(r.rung_or_zero, 0) + 1
        return counts

    def update(self) -> None:
        counts = self._counts()
        self.bar.update(min(counts[0], self.config.trials) - self.bar.n)
        higher = ", ".join(f"rung {r}: {n}" for r, n in sorted(counts.items()) if r > 0)
        if higher:
            self.bar.set_postfix_str(higher)

    def close(self) -> None:
        self.bar.close()


class _RunawayGuard:
    """Stops a worker whose evaluations keep failing or being rejected (nothing else would stop it)."""

    def __init__(self, trials: int) -> None:
        self.limit = max(20, 5 * trials)
        self.seen = 0
        self.tripped = False

    def __call__(self, study, trial) -> None:
        import optuna

        if trial.state != optuna.trial.TrialState.COMPLETE and not TrialRecord.from_trial(trial).is_skip:
            self.seen += 1
            if self.seen >= self.limit and not self.tripped:
                self.tripped = True
                _logger.error("stopping: %d evaluations of this worker failed or were rejected (see report.md for "
                              "the reasons); loosen --latency-max or check the proxy settings", self.seen)
                study.stop()


class _StopOnSigint:
    """SIGINT stops the worker within the trial in flight.

    During a candidate's training (:meth:`armed`) the first SIGINT raises ``KeyboardInterrupt`` at once (the
    trial is lost); anywhere else, and for every later SIGINT, it only sets a flag, which the Optuna callback
    turns into ``study.stop()`` and :meth:`reraise` into ``KeyboardInterrupt`` once Optuna has finished its
    bookkeeping (an interrupt inside Optuna's ``tell`` would leave a RUNNING trial and a traceback). Python also
    drops a ``KeyboardInterrupt`` raised inside a finalizer ("Exception ignored in ..."); the flag covers that.
    Only the main thread can set signal handlers; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._installed = False
        self._previous = None
        self._armed = False
        self._raised = False

    def __enter__(self) -> _StopOnSigint:
        import signal
        import sys

        if _main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
            self._installed = True
        return self

    def _unraisable(self, info) -> None:  # a Ctrl-C that landed in a finalizer: handled by the flag, not printed
        if not (self.requested and isinstance(info.exc_value, KeyboardInterrupt)):
            self._hook(info)

    def __exit__(self, *exc) -> None:
        import signal
        import sys

        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)
            sys.unraisablehook = self._hook
            self._installed = False

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if self._armed and not self._raised:  # only inside training: never in the middle of Optuna's bookkeeping
            self._raised = True
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def armed(self):
        """Within this block (a candidate's training) SIGINT raises at once; elsewhere it only sets the flag."""
        if self.requested:
            raise KeyboardInterrupt
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def __call__(self, study, trial) -> None:  # an Optuna callback
        if self.requested:
            study.stop()

    def reraise(self) -> None:
        if self.requested:
            raise KeyboardInterrupt



def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def default_threads(workers: int) -> int:
    """torch threads per worker: the cores minus one (for the storage, LUT and OS), shared by the workers.

    Oversubscribed cores make torch's thread pool collapse (5-10x slower training measured on 2 cores), so a
    2-core machine trains on one thread.
    """
    return max(1, ((os.cpu_count() or 1) - 1) // max(1, workers))


def run_local_workers(config: SearchConfig) -> None:
    """``config.workers`` processes on this machine; SIGINT reaches them all and each stops within its trial."""
    import multiprocessing as mp
    import signal

    from ._report import claim_run_folder

    opened = open_studies(config, 0)  # settings check and baseline queue, once, before any worker starts
    claim_run_folder(config.out_dir, config.study_name, opened.uid)
    ctx = mp.get_context("spawn")
    threads = config.threads or default_threads(config.workers)
    cfg = dataclasses.replace(config, threads=threads)
    procs = [ctx.Process(target=_worker_entry, args=(cfg, i, opened.created), name=f"nas-worker-{i}")
             for i in range(config.workers)]
    for p in procs:
        p.start()
    # SIGINT raises here even when this process inherited it ignored (a background job of a shell, nohup), as a
    # single worker's own handler does: `kill -INT` stops the search the same way with one worker or several
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if _main_thread() else None
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # a terminal's Ctrl-C reaches them already; a SIGINT sent to this process alone does not
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.terminate()
                p.join(10)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    bad = [p.exitcode for p in procs if p.exitcode]
    if len(bad) == len(procs):
        from ._errors import NASError

        raise NASError(f"all {len(procs)} workers failed (exit codes {bad}); see their messages above")
    if bad:
        _logger.warning("%d of %d workers exited with an error (codes %s); the report covers what they stored",
                        len(bad), len(procs), bad)


class _DropInterruptedTrialLogs(logging.Filter):
    """Optuna logs a trial ended by Ctrl-C as a failure with its traceback; the CLI says "interrupted" instead."""

    def __init__(self) -> None:
        super().__init__()
        self.trials: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        import re

        m = re.match(r"Trial (\d+) failed", record.getMessage())
        if m and record.exc_info and issubclass(record.exc_info[0], KeyboardInterrupt):
            self.trials.add(m.group(1))
            return False
        return not (m and m.group(1) in self.trials)


def quiet_interrupted_trials() -> None:
    log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _DropInterruptedTrialLogs) for f in log.filters):
        log.addFilter(_DropInterruptedTrialLogs())


def _worker_entry(config: SearchConfig, worker: int, fresh_seeds: bool) -> None:  # pragma: no cover - a child
    import sys

    from search_space import RepNASError

    logging.basicConfig(level=logging.INFO, format=f"[worker {worker}] %(message)s")
    quiet_interrupted_trials()
    try:
        run_worker(config, worker=worker, progress=worker == 0, fresh_seeds=fresh_seeds)
    except (RepNASError, ValueError) as e:
        print(f"error: [worker {worker}] {scrub(e, [config.storage_url, config.lut_db])}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
