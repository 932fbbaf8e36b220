"""Claiming work in a shared study, so that workers never repeat each other.

Workers (processes on one machine, or commands on several) share one Optuna study and coordinate only
through it. Before a trial trains anything it *claims* a key (a genome's ``Genome.key()``, a baseline's
name) by marking itself, then looks at every other trial:

- a COMPLETE trial already scored that key: this trial is a duplicate and trains nothing;
- another RUNNING trial claims the same key: it is being scored elsewhere; this one steps back;
- with a target count of COMPLETE trials: if the COMPLETE trials plus the other claimed RUNNING trials
  already reach it, this trial waits (polling) until one of them finishes or fails, and gives up once the
  target is met.

Marking first and looking second makes the rule safe without locks: of two workers that claim at the same
moment, the later one to look always sees the other's mark, so at most one of them trains a key and the
claimed trials never exceed the target. Both may step back at worst: a sampled trial then tries another
genome; a queued evaluation (a promotion, a baseline) whose copies all stepped back counts as not queued,
and the next promotion sweep queues it again (:meth:`nas._studies.Handle.enqueue`).
A killed worker's RUNNING trial keeps its claim until Optuna's heartbeat fails it (``fail_stale_trials``,
called while waiting).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ._record import TrialRecord, set_attrs

__all__ = ["Claim", "claim", "claimed_key"]


@dataclass(frozen=True)
class Claim:
    """What :func:`claim` decided: ``go`` (train it), ``duplicate`` (of trial ``of``), ``full`` (the target is met)
    or ``stopped`` (the deadline passed or Ctrl-C came while it waited)."""

    verdict: str
    of: int | None = None

    @property
    def go(self) -> bool:
        return self.verdict == "go"


def claim(handle, trial, key: str, *, target: int | None = None, poll: float = 2.0,
          deadline: float | None = None, cancelled=None) -> Claim:
    """Claim ``key`` for ``trial`` (an ``optuna.Trial`` of ``handle``, a :class:`nas._studies.Handle`); see the
    module docstring. The mark is the record's ``claim`` field, the key its ``genome_key``.

    Args:
        target: COMPLETE trials the study should end with (None: no limit, only duplicates are refused).
        poll: Mean seconds between looks while waiting for claimed trials to finish.
        deadline: ``time.monotonic()`` after which a waiting claim gives up as ``stopped``.
        cancelled: A callable; once it returns True (Ctrl-C) a waiting claim gives up as ``stopped``.
    """
    import optuna

    S = optuna.trial.TrialState
    rng = random.Random()
    while True:
        set_attrs(trial, claim=[trial.number, key])
        others = [t for t in handle.trials((S.COMPLETE, S.RUNNING), fresh=True) if t.number != trial.number]
        done = [t for t in others if t.state == S.COMPLETE and TrialRecord.from_trial(t).genome_key == key
                and t.values]
        busy = [t for t in others if t.state == S.RUNNING and claimed_key(t) == key]
        if done or busy:
            set_attrs(trial, claim=None)
            return Claim("duplicate", (done or busy)[0].number)
        if target is None:
            break
        complete = sum(t.state == S.COMPLETE for t in others)
        in_flight = sum(t.state == S.RUNNING and claimed_key(t) is not None for t in others)
        if complete >= target:
            set_attrs(trial, claim=None)
            return Claim("full")
        if complete + in_flight < target:
            break
        set_attrs(trial, claim=None)  # step back while the claimed trials finish (or fail)
        if (deadline is not None and time.monotonic() >= deadline) or (cancelled is not None and cancelled()):
            return Claim("stopped")
        time.sleep(poll * (0.5 + rng.random()))
        handle.fail_stale()
    set_attrs(trial, genome_key=key)
    return Claim("go")


def claimed_key(t) -> str | None:
    """The key trial ``t`` claims itself. A retried trial inherits its failed original's user attributes (Optuna's
    ``RetryHeartbeatStaleTrialCallback`` copies them), so a mark counts only if it names ``t``'s own number."""
    mark = TrialRecord.from_trial(t).claim
    if isinstance(mark, list) and len(mark) == 2 and mark[0] == t.number:
        return mark[1]
    return None
