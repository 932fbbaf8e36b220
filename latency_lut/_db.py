"""The LUT database: SQLAlchemy 2.0 typed models, SQLite by default, any SQLAlchemy URL when shared.

Rows are keyed by ``(device, signature_key)``; writes that hit an existing key are skipped, never
overwritten, so concurrent or resumed builds lose nothing. Public functions return frozen
:class:`LatencyRecord` objects, never ORM rows.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from ._errors import LUTStorageError

__all__ = ["DEFAULT_DB", "LatencyRecord", "LatencyTable", "Source", "resolve_db_url"]

_logger = logging.getLogger(__name__)
SCHEMA_VERSION = 1
FLOAT_PRECISION = 53
#: Default SQLite file, in the working directory unless ``REPNAS_LUT_DB`` names another path or URL.
DEFAULT_DB = "repnas-lut.db"


class Source(str, enum.Enum):
    MEASURED = "measured"
    PREDICTED = "predicted"
    IMPORTED = "imported"  # measured on a remote device by the bundle runner


class Base(DeclarativeBase):
    pass


class LatencyRow(Base):
    __tablename__ = "latency_entries"
    __table_args__ = (UniqueConstraint("device", "signature_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device: Mapped[str] = mapped_column(String(64), index=True)
    signature_key: Mapped[str] = mapped_column(String(32))
    block_type: Mapped[str] = mapped_column(String(32))
    signature_json: Mapped[str] = mapped_column(Text)
    median_ms: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    p10_ms: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    p90_ms: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    runs: Mapped[int] = mapped_column(Integer)
    source: Mapped[Source] = mapped_column(Enum(Source))
    backend: Mapped[str] = mapped_column(String(64))
    versions_json: Mapped[str] = mapped_column(Text)
    threads: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime(timezone=True))


class VersionInfoRow(Base):
    __tablename__ = "version_info"
    __table_args__ = (CheckConstraint("version_info_id=1"),)

    version_info_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    schema_version: Mapped[int] = mapped_column(Integer)
    library_version: Mapped[str] = mapped_column(String(32))


@dataclass(frozen=True)
class LatencyRecord:
    """One LUT entry: the latency of one block signature on one device, in milliseconds."""

    device: str
    signature_key: str
    block_type: str
    signature: dict
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    source: Source
    backend: str
    versions: dict
    threads: int
    created_at: _dt.datetime

    @classmethod
    def _from_row(cls, row: LatencyRow) -> LatencyRecord:
        return cls(
            device=row.device, signature_key=row.signature_key, block_type=row.block_type,
            signature=json.loads(row.signature_json), median_ms=row.median_ms, p10_ms=row.p10_ms,
            p90_ms=row.p90_ms, runs=row.runs, source=Source(row.source), backend=row.backend,
            versions=json.loads(row.versions_json), threads=row.threads, created_at=row.created_at,
        )


def resolve_db_url(db: str | os.PathLike | None) -> str:
    """A SQLAlchemy URL from a URL, a file path, or ``None`` (``$REPNAS_LUT_DB`` or ``./repnas-lut.db``)."""
    db = os.fspath(db) if db is not None else os.environ.get("REPNAS_LUT_DB", DEFAULT_DB)
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


class LatencyTable:
    """A LUT database. ``LatencyTable('lut.db')``, ``LatencyTable('postgresql://...')``."""

    def __init__(self, db: str | os.PathLike | None = None, *, create: bool = True) -> None:
        self.url = resolve_db_url(db)
        try:
            url = make_url(self.url)
        except ArgumentError as e:
            raise LUTStorageError(f"malformed database URL {self.url!r}: {e}") from None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = Path(url.database)
            if not path.parent.exists():
                raise LUTStorageError(f"cannot create the LUT database {path}: folder {path.parent} does not exist")
            if path.exists() and path.stat().st_size and not _looks_like_sqlite(path):
                raise LUTStorageError(f"{path} is not a SQLite database (corrupted or another kind of file); "
                                      "nothing was changed. Pass another file with --db.")
        try:
            self.engine: Engine = create_engine(self.url, future=True)
            if create:
                Base.metadata.create_all(self.engine)
                self._check_version()
        except ModuleNotFoundError as e:
            raise LUTStorageError(f"the driver for {url.drivername!r} is not installed ({e.name}); "
                                  "for PostgreSQL: pip install 'psycopg[binary]'") from None
        except SQLAlchemyError as e:
            raise LUTStorageError(f"cannot open the LUT database {_safe(self.url)}: {_first_line(e)}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _check_version(self) -> None:
        from search_space import __version__

        with Session(self.engine) as s, s.begin():
            info = s.get(VersionInfoRow, 1)
            if info is None:
                s.add(VersionInfoRow(version_info_id=1, schema_version=SCHEMA_VERSION, library_version=__version__))
            elif info.schema_version != SCHEMA_VERSION:
                raise LUTStorageError(f"LUT schema version {info.schema_version} in {_safe(self.url)} is not "
                                      f"supported (expected {SCHEMA_VERSION})")

    @contextmanager
    def _session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except IntegrityError:
            session.rollback()
            raise  # a key that is already stored: callers decide
        except SQLAlchemyError as e:
            session.rollback()
            raise LUTStorageError(f"LUT database error ({_safe(self.url)}): {_first_line(e)}") from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # -- reads ----------------------------------------------------------------------------------
    def get(self, device: str, signature_key: str) -> LatencyRecord | None:
        with self._session() as s:
            row = s.scalar(select(LatencyRow).where(LatencyRow.device == device,
                                                    LatencyRow.signature_key == signature_key))
            return LatencyRecord._from_row(row) if row is not None else None

    def keys(self, device: str) -> set[str]:
        with self._session() as s:
            return set(s.scalars(select(LatencyRow.signature_key).where(LatencyRow.device == device)))

    def records(self, device: str | None = None) -> list[LatencyRecord]:
        with self._session() as s:
            q = select(LatencyRow).order_by(LatencyRow.device, LatencyRow.block_type, LatencyRow.id)
            if device is not None:
                q = q.where(LatencyRow.device == device)
            return [LatencyRecord._from_row(r) for r in s.scalars(q)]

    def devices(self) -> dict[str, int]:
        from sqlalchemy import func

        with self._session() as s:
            return dict(s.execute(select(LatencyRow.device, func.count()).group_by(LatencyRow.device)).all())

    # -- writes ---------------------------------------------------------------------------------
    def add(self, record: LatencyRecord) -> bool:
        """Store one record; returns False (and keeps the stored one) if the key already exists."""
        row = LatencyRow(
            device=record.device, signature_key=record.signature_key, block_type=record.block_type,
            signature_json=json.dumps(record.signature, sort_keys=True), median_ms=float(record.median_ms),
            p10_ms=float(record.p10_ms), p90_ms=float(record.p90_ms), runs=int(record.runs), source=record.source,
            backend=record.backend, versions_json=json.dumps(record.versions, sort_keys=True),
            threads=int(record.threads), created_at=record.created_at,
        )
        try:
            with self._session() as s:
                s.add(row)
        except IntegrityError:
            return False
        return True

    def add_many(self, records: Iterable[LatencyRecord]) -> int:
        """Store many records in one transaction (all or nothing); returns how many were new.

        Keys already stored (or repeated in ``records``) are skipped, never overwritten. If a concurrent
        writer stores one of the keys meanwhile, the transaction is rolled back and retried.
        """
        records = list(records)
        for _attempt in range(3):
            try:
                with self._session() as s:
                    added = 0
                    for device in sorted({r.device for r in records}):
                        have = set(s.scalars(select(LatencyRow.signature_key).where(LatencyRow.device == device)))
                        for r in records:
                            if r.device == device and r.signature_key not in have:
                                s.add(LatencyRow(
                                    device=r.device, signature_key=r.signature_key, block_type=r.block_type,
                                    signature_json=json.dumps(r.signature, sort_keys=True),
                                    median_ms=float(r.median_ms), p10_ms=float(r.p10_ms), p90_ms=float(r.p90_ms),
                                    runs=int(r.runs), source=r.source, backend=r.backend,
                                    versions_json=json.dumps(r.versions, sort_keys=True), threads=int(r.threads),
                                    created_at=r.created_at,
                                ))
                                have.add(r.signature_key)
                                added += 1
                return added
            except IntegrityError:
                continue  # rolled back; someone stored one of these keys meanwhile: recompute and retry
        raise LUTStorageError(f"could not store {len(records)} rows in {_safe(self.url)}: keys kept colliding "
                              "with concurrent writers; nothing was stored, try again")

    def close(self) -> None:
        self.engine.dispose()


def _looks_like_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _first_line(e: Exception) -> str:
    return str(getattr(e, "orig", None) or e).strip().splitlines()[0]


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
