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

from ._dburl import database_url, first_error_line, not_sqlite_file
from ._errors import LUTStorageError
from ._secrets import redact_url

__all__ = ["DEFAULT_DB", "LatencyRecord", "LatencyTable", "NetworkCorrection", "NetworkMeasurement", "Source",
           "open_table", "resolve_db_url"]

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


class NetworkMeasurementRow(Base):
    """A whole network measured end to end, with its LUT sum at the time (calibration genomes).

    Added after schema version 1 as a new table: databases written before it get the table on opening,
    their other tables are untouched.
    """

    __tablename__ = "network_measurements"
    __table_args__ = (UniqueConstraint("device", "threads", "resolution", "role", "genome_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device: Mapped[str] = mapped_column(String(64), index=True)
    threads: Mapped[int] = mapped_column(Integer)
    resolution: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(Integer)
    genome_key: Mapped[str] = mapped_column(String(64))
    genome_json: Mapped[str] = mapped_column(Text)
    n_units: Mapped[int] = mapped_column(Integer)
    lut_sum_ms: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    median_ms: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    p10_ms: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    p90_ms: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    cpu_median_ms: Mapped[float | None] = mapped_column(Float(precision=FLOAT_PRECISION), nullable=True)
    runs: Mapped[int] = mapped_column(Integer)
    versions_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime(timezone=True))


class NetworkCorrectionRow(Base):
    """A device's network-level correction ``a * lut_sum + b * n_units + c`` (new table, see above)."""

    __tablename__ = "network_corrections"
    __table_args__ = (UniqueConstraint("device", "threads", "resolution"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device: Mapped[str] = mapped_column(String(64), index=True)
    threads: Mapped[int] = mapped_column(Integer)
    resolution: Mapped[int] = mapped_column(Integer)
    a: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    b_ms: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    c_ms: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    clock: Mapped[str] = mapped_column(String(16))
    n_genomes: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    fit_mape_pct: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    fit_max_pct: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    loo_mape_pct: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    raw_mape_pct: Mapped[float] = mapped_column(Float(precision=FLOAT_PRECISION))
    genome_keys_json: Mapped[str] = mapped_column(Text)
    versions_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime(timezone=True))


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


@dataclass(frozen=True)
class NetworkMeasurement:
    """One whole network measured end to end (ms) with its LUT sum (ms) and unit count when it was measured.

    ``cpu_median_ms`` is the calling thread's CPU time (one-thread CPU devices; None elsewhere).
    """

    device: str
    threads: int
    resolution: int
    role: str
    seed: int
    genome_key: str
    genome: dict
    n_units: int
    lut_sum_ms: float
    median_ms: float
    p10_ms: float
    p90_ms: float
    cpu_median_ms: float | None
    runs: int
    versions: dict
    created_at: _dt.datetime

    @property
    def target_ms(self) -> float:
        """The latency a correction is fitted to: CPU time where recorded (immune to other load), else wall."""
        return self.cpu_median_ms if self.cpu_median_ms is not None else self.median_ms

    @classmethod
    def _from_row(cls, row: NetworkMeasurementRow) -> NetworkMeasurement:
        return cls(
            device=row.device, threads=row.threads, resolution=row.resolution, role=row.role, seed=row.seed,
            genome_key=row.genome_key, genome=json.loads(row.genome_json), n_units=row.n_units,
            lut_sum_ms=row.lut_sum_ms, median_ms=row.median_ms, p10_ms=row.p10_ms, p90_ms=row.p90_ms,
            cpu_median_ms=row.cpu_median_ms, runs=row.runs, versions=json.loads(row.versions_json),
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class NetworkCorrection:
    """``predicted = a * lut_sum + b_ms * n_units + c_ms`` for one device, thread count and resolution.

    Fitted on ``n_genomes`` calibration genomes (drawn with ``seed``; their keys in ``genome_keys``) measured
    end to end; ``fit_mape_pct``/``fit_max_pct`` are its in-sample errors, ``loo_mape_pct`` its
    leave-one-out error, ``raw_mape_pct`` the uncorrected LUT sum's error on the same genomes.
    """

    device: str
    threads: int
    resolution: int
    a: float
    b_ms: float
    c_ms: float
    clock: str
    n_genomes: int
    seed: int
    fit_mape_pct: float
    fit_max_pct: float
    loo_mape_pct: float
    raw_mape_pct: float
    genome_keys: tuple[str, ...]
    versions: dict
    created_at: _dt.datetime

    def apply(self, lut_sum_ms: float, n_units: int) -> float:
        return self.a * lut_sum_ms + self.b_ms * n_units + self.c_ms

    def describe(self) -> str:
        return (f"a={self.a:.4f}, b={self.b_ms * 1e3:+.1f} us/unit, c={self.c_ms:+.3f} ms; fitted on {self.n_genomes} "
                f"calibration genomes (seed {self.seed}, {self.clock} clock): fit MAPE {self.fit_mape_pct:.1f}% "
                f"(max {self.fit_max_pct:.1f}%), leave-one-out {self.loo_mape_pct:.1f}%, uncorrected "
                f"{self.raw_mape_pct:.1f}%")

    @classmethod
    def _from_row(cls, row: NetworkCorrectionRow) -> NetworkCorrection:
        return cls(
            device=row.device, threads=row.threads, resolution=row.resolution, a=row.a, b_ms=row.b_ms,
            c_ms=row.c_ms, clock=row.clock, n_genomes=row.n_genomes, seed=row.seed, fit_mape_pct=row.fit_mape_pct,
            fit_max_pct=row.fit_max_pct, loo_mape_pct=row.loo_mape_pct, raw_mape_pct=row.raw_mape_pct,
            genome_keys=tuple(json.loads(row.genome_keys_json)), versions=json.loads(row.versions_json),
            created_at=row.created_at,
        )


def resolve_db_url(db: str | os.PathLike | None) -> str:
    """A SQLAlchemy URL from a URL, a file path, or ``None`` (``$REPNAS_LUT_DB`` or ``./repnas-lut.db``)."""
    db = os.fspath(db) if db is not None else os.environ.get("REPNAS_LUT_DB", DEFAULT_DB)
    return database_url(db, lambda safe: LUTStorageError(
        f"malformed database URL {safe!r}: expected two slashes after the scheme "
        "(postgresql+psycopg://USER@HOST/DATABASE), or a SQLite file path"))


class LatencyTable:
    """A LUT database. ``LatencyTable('lut.db')``, ``LatencyTable('postgresql://...')``."""

    def __init__(self, db: str | os.PathLike | None = None, *, create: bool = True) -> None:
        self.url = resolve_db_url(db)
        try:
            url = make_url(self.url)
        except ArgumentError as e:
            raise LUTStorageError(f"malformed database URL {self.safe_url!r}: {e}") from None
        if url.host and "@" in url.host:
            raise LUTStorageError(f"malformed database URL {self.safe_url!r}: its host name holds an '@'; an '@' (or "
                                  "':', '/') in the user name or password must be percent-encoded ('@' as %40)")
        #: the SQLite file, or None (another database, or SQLite in memory)
        self.path: Path | None = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = self.path = Path(url.database)
            if not path.parent.exists():
                raise LUTStorageError(f"cannot create the LUT database {path}: folder {path.parent} does not exist")
            if path.is_dir():
                raise LUTStorageError(f"the LUT database {path} is a folder, not a SQLite file; pass a file with --db")
            if not_sqlite_file(path):
                raise LUTStorageError(f"{path} is not a SQLite database (corrupted or another kind of file); "
                                      "nothing was changed. Pass another file with --db.")
        self._create = create
        self._ready = False
        try:
            self.engine: Engine = create_engine(self.url, future=True)
        except ModuleNotFoundError as e:
            raise LUTStorageError(f"the driver for {url.drivername!r} is not installed ({e.name}); "
                                  "for PostgreSQL: pip install 'psycopg[binary]'") from None
        except (SQLAlchemyError, ValueError, TypeError) as e:
            raise self._error("cannot open the LUT database", e) from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if self.path is None or self.path.exists():
            self._ensure()  # a SQLite file that does not exist yet is created by the first write, not here

    @property
    def safe_url(self) -> str:
        """The URL as every message and log line shows it: without its password or secret query parameters."""
        return redact_url(self.url)

    def _describe(self) -> str:
        """The database as messages name it: the SQLite file's path, else the redacted URL."""
        return str(self.path) if self.path is not None else self.safe_url

    def _error(self, what: str, e: BaseException) -> LUTStorageError:
        """A driver error as one message naming the database, with no secret of its URL in it."""
        first = first_error_line(e, self.url)
        if self.path is not None and any(w in first for w in ("malformed", "not a database", "corrupt")):
            return LUTStorageError(f"the LUT database {self.path} is corrupt ({first}); nothing was changed. "
                                   "Pass another file with --db.")
        return LUTStorageError(f"{what} {self._describe()} ({first})")

    def _absent(self) -> bool:
        """True while the SQLite file does not exist: reads find nothing, without creating the file."""
        return not self._ready and self.path is not None and not self.path.exists()

    def _ensure(self) -> None:
        """Create the tables (and the SQLite file) if missing and check the schema version, once."""
        if self._ready:
            return
        for attempt in range(2):  # a second time if another process created the tables meanwhile
            try:
                if self._create:
                    Base.metadata.create_all(self.engine)
                    self._check_version()
                break
            except ModuleNotFoundError as e:
                raise LUTStorageError(f"the driver for {self.engine.url.drivername!r} is not installed ({e.name}); "
                                      "for PostgreSQL: pip install 'psycopg[binary]'") from None
            except SQLAlchemyError as e:
                if attempt:
                    raise self._error("cannot open the LUT database", e) from None
        self._ready = True

    def _check_version(self) -> None:
        from search_space import __version__

        with Session(self.engine) as s, s.begin():
            info = s.get(VersionInfoRow, 1)
            if info is None:
                s.add(VersionInfoRow(version_info_id=1, schema_version=SCHEMA_VERSION, library_version=__version__))
            elif info.schema_version != SCHEMA_VERSION:
                raise LUTStorageError(f"LUT schema version {info.schema_version} in {self._describe()} is not "
                                      f"supported (expected {SCHEMA_VERSION})")

    @contextmanager
    def _session(self) -> Iterator[Session]:
        self._ensure()
        session = self._sessions()
        try:
            yield session
            session.commit()
        except IntegrityError:
            session.rollback()
            raise  # a key that is already stored: callers decide
        except SQLAlchemyError as e:
            session.rollback()
            raise self._error("LUT database error in", e) from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # -- reads ----------------------------------------------------------------------------------
    def get(self, device: str, signature_key: str) -> LatencyRecord | None:
        if self._absent():
            return None
        with self._session() as s:
            row = s.scalar(select(LatencyRow).where(LatencyRow.device == device,
                                                    LatencyRow.signature_key == signature_key))
            return LatencyRecord._from_row(row) if row is not None else None

    def keys(self, device: str) -> set[str]:
        if self._absent():
            return set()
        with self._session() as s:
            return set(s.scalars(select(LatencyRow.signature_key).where(LatencyRow.device == device)))

    def records(self, device: str | None = None) -> list[LatencyRecord]:
        if self._absent():
            return []
        with self._session() as s:
            q = select(LatencyRow).order_by(LatencyRow.device, LatencyRow.block_type, LatencyRow.id)
            if device is not None:
                q = q.where(LatencyRow.device == device)
            return [LatencyRecord._from_row(r) for r in s.scalars(q)]

    def devices(self) -> dict[str, int]:
        from sqlalchemy import func

        if self._absent():
            return {}
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
        raise LUTStorageError(f"could not store {len(records)} rows in {self._describe()}: keys kept colliding "
                              "with concurrent writers; nothing was stored, try again")

    # -- whole networks and network corrections (tables added after schema version 1) ------------------
    def _has_table(self, name: str) -> bool:
        from sqlalchemy import inspect

        if self._absent():
            return False
        self._ensure()
        try:
            return inspect(self.engine).has_table(name)
        except SQLAlchemyError as e:
            raise self._error("LUT database error in", e) from None

    def add_network_measurement(self, m: NetworkMeasurement) -> bool:
        """Store one network measurement; returns False (and keeps the stored one) if its key exists."""
        row = NetworkMeasurementRow(
            device=m.device, threads=int(m.threads), resolution=int(m.resolution), role=m.role, seed=int(m.seed),
            genome_key=m.genome_key, genome_json=json.dumps(m.genome, sort_keys=True), n_units=int(m.n_units),
            lut_sum_ms=float(m.lut_sum_ms), median_ms=float(m.median_ms), p10_ms=float(m.p10_ms),
            p90_ms=float(m.p90_ms), cpu_median_ms=None if m.cpu_median_ms is None else float(m.cpu_median_ms),
            runs=int(m.runs), versions_json=json.dumps(m.versions, sort_keys=True), created_at=m.created_at,
        )
        try:
            with self._session() as s:
                s.add(row)
        except IntegrityError:
            return False
        return True

    def network_measurements(self, device: str, threads: int, resolution: int,
                             role: str = "calibration") -> list[NetworkMeasurement]:
        if not self._has_table(NetworkMeasurementRow.__tablename__):
            return []
        with self._session() as s:
            q = select(NetworkMeasurementRow).where(
                NetworkMeasurementRow.device == device, NetworkMeasurementRow.threads == threads,
                NetworkMeasurementRow.resolution == resolution, NetworkMeasurementRow.role == role,
            ).order_by(NetworkMeasurementRow.id)
            return [NetworkMeasurement._from_row(r) for r in s.scalars(q)]

    def add_correction(self, c: NetworkCorrection) -> bool:
        """Store a network correction; returns False (and keeps the stored one) if the device has one already."""
        row = NetworkCorrectionRow(
            device=c.device, threads=int(c.threads), resolution=int(c.resolution), a=float(c.a),
            b_ms=float(c.b_ms), c_ms=float(c.c_ms), clock=c.clock, n_genomes=int(c.n_genomes), seed=int(c.seed),
            fit_mape_pct=float(c.fit_mape_pct), fit_max_pct=float(c.fit_max_pct),
            loo_mape_pct=float(c.loo_mape_pct), raw_mape_pct=float(c.raw_mape_pct),
            genome_keys_json=json.dumps(list(c.genome_keys)), versions_json=json.dumps(c.versions, sort_keys=True),
            created_at=c.created_at,
        )
        try:
            with self._session() as s:
                s.add(row)
        except IntegrityError:
            return False
        return True

    def correction(self, device: str, threads: int, resolution: int) -> NetworkCorrection | None:
        if not self._has_table(NetworkCorrectionRow.__tablename__):
            return None
        with self._session() as s:
            row = s.scalar(select(NetworkCorrectionRow).where(
                NetworkCorrectionRow.device == device, NetworkCorrectionRow.threads == threads,
                NetworkCorrectionRow.resolution == resolution))
            return NetworkCorrection._from_row(row) if row is not None else None

    def close(self) -> None:
        self.engine.dispose()


def open_table(db: LatencyTable | str | os.PathLike | None = None) -> LatencyTable:
    """``db`` itself if it is a :class:`LatencyTable`, else the table at that path or URL (``None``: the default)."""
    return db if isinstance(db, LatencyTable) else LatencyTable(db)
