"""Opening the Optuna storage: SQLite by default, any SQLAlchemy URL, heartbeats for crash recovery."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from latency_lut import database_url, first_error_line, not_sqlite_file, redact_url, scrub

from ._errors import SearchConfigError, StudyStorageError

__all__ = ["DEFAULT_STORAGE", "first_error_line", "is_sqlite", "load_existing_study", "open_storage", "redact_url",
           "resolve_storage_url", "scrub"]

_logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "repnas-search.db"
"""Default storage: a SQLite file in the working directory."""


def resolve_storage_url(storage: str | None) -> str:
    """A SQLAlchemy URL for ``storage``: a URL as is, a file path as ``sqlite:///PATH``, None as the default file."""
    if storage is None or storage == "":
        storage = DEFAULT_STORAGE
    return database_url(storage, lambda safe: StudyStorageError(
        f"malformed storage URL {safe!r}: expected e.g. sqlite:///search.db or postgresql://user:pass@host:5432/db"))


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def open_storage(storage: str | None, *, heartbeat_interval: int | None = 10, grace_period: int | None = None,
                 max_retry: int = 1):
    """An Optuna ``RDBStorage`` with heartbeats, so a killed worker's trial is failed and retried, never stuck.

    Args:
        storage: SQLAlchemy URL or SQLite file path (default ``./repnas-search.db``).
        heartbeat_interval: Seconds between a running trial's heartbeats (None disables them).
        grace_period: Seconds without a heartbeat after which a RUNNING trial counts as stale
            (default: 2 x ``heartbeat_interval``, Optuna's own default).
        max_retry: How many times a stale trial is re-queued with the same parameters before it stays FAILED.

    Raises:
        StudyStorageError: The URL is malformed, its driver is missing, or the database is unreachable.
    """
    import optuna
    import sqlalchemy.exc

    url = resolve_storage_url(storage)
    if is_sqlite(url):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            p = Path(path)
            if not_sqlite_file(p):
                raise StudyStorageError(f"{p} exists but is not a SQLite database; pass another --storage "
                                        "(the file was left untouched)")
            if not p.parent.exists():
                raise StudyStorageError(f"storage directory {p.parent} does not exist")
    if heartbeat_interval is not None and heartbeat_interval < 1:
        raise SearchConfigError(f"heartbeat interval must be >= 1 s, got {heartbeat_interval}")
    kwargs = {}
    if heartbeat_interval is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        kwargs = dict(heartbeat_interval=int(heartbeat_interval),
                      grace_period=int(grace_period) if grace_period else None,
                      heartbeat_stale_trial_callback=retry)
    engine_kwargs = {"connect_args": {"timeout": 60}} if is_sqlite(url) else {"pool_pre_ping": True}
    try:
        return _rdb_storage(url, engine_kwargs, kwargs)
    except sqlalchemy.exc.ArgumentError as e:
        raise StudyStorageError(f"malformed storage URL {redact_url(url)!r}: {first_error_line(e, url)}") from None
    except sqlalchemy.exc.NoSuchModuleError as e:
        raise StudyStorageError(f"storage URL {redact_url(url)!r}: unknown database dialect "
                                f"({first_error_line(e, url)})") from None
    except ImportError as e:
        raise StudyStorageError(f"storage URL {redact_url(url)!r}: its database driver is not installed "
                                f"({first_error_line(e, url)}; for postgresql:// URLs: pip install "
                                "'psycopg[binary]')") from None
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.DatabaseError) as e:
        raise StudyStorageError(f"cannot open storage {redact_url(url)!r}: {first_error_line(e, url)}") from None
    except ValueError as e:
        raise StudyStorageError(f"storage URL {redact_url(url)!r}: {first_error_line(e, url)}") from None


def _rdb_storage(url: str, engine_kwargs: dict, kwargs: dict, *, attempts: int = 8):
    """``RDBStorage(url)``; retried when workers started together race to create the schema of a new database
    (one of them wins, the others see a duplicate ``alembic_version`` row or an existing table)."""
    import random
    import time

    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            racing = not isinstance(e, sqlalchemy.exc.OperationalError) or "already exists" in str(e)
            if not racing or attempt == attempts - 1:  # SQLite reports the race as "table ... already exists"
                raise
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def load_existing_study(storage, study_name: str, *, must_exist: bool = False):
    """Load ``study_name`` for reading (no heartbeats); a missing study names the studies the storage holds.

    ``storage`` is a URL or SQLite path (None: the default file), or an already opened Optuna storage. With
    ``must_exist`` a SQLite file that does not exist is an error instead of a new empty database.
    """
    import optuna

    if storage is not None and not isinstance(storage, str):  # an opened storage
        st, url = storage, getattr(getattr(storage, "engine", None), "url", "the storage")
        url = redact_url(url)
    else:
        url = resolve_storage_url(storage)
        if (must_exist and is_sqlite(url) and url != "sqlite:///:memory:"
                and not Path(url[len("sqlite:///"):]).is_file()):
            raise StudyStorageError(f"no storage file {url[len('sqlite:///'):]} (pass the --storage the search used)")
        st = open_storage(storage, heartbeat_interval=None)
    try:
        return optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False))
        raise StudyStorageError(f"no study {study_name!r} in {redact_url(url)} (studies there: "
                                f"{', '.join(names) if names else 'none'})") from None
