"""Database locations, for both databases: the LUT (``_db``) and the search's Optuna storage (``nas``).

A location given as a file path or a URL becomes a SQLAlchemy URL (:func:`database_url`), an existing file is
checked to be SQLite before a database is opened on it (:func:`not_sqlite_file`), and a driver's error is
shortened to its first line with no secret in it (:func:`first_error_line`). Passwords are taken out of URLs by
``_secrets``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from ._secrets import redact_url, scrub

__all__ = ["SQLITE_HEADER", "database_url", "first_error_line", "not_sqlite_file"]

#: ``scheme://``: a URL, passed on as it is.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
#: ``scheme:/`` with one slash (``postgresql:/user:pw@host/db``). Schemes of one letter are left alone
#: (``C:/lut.db`` is a Windows path).
_ONE_SLASH = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:/(?!/)")
#: Dialects whose name followed by ``:`` (``sqlite:search.db``) is a URL missing its ``//``, not a file name.
_DIALECTS = ("postgresql:", "mysql:", "sqlite:")

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""


def database_url(location: str, malformed: Callable[[str], Exception]) -> str:
    """``location`` as a SQLAlchemy URL: a URL (``scheme://...``) as it is, a file path as ``sqlite:///ABSOLUTE``.

    A mistyped URL is refused, never taken for a file name: ``://`` after something that is not a scheme, one
    slash after the scheme (``postgresql:/u:pw@host/db``), or ``postgresql:``, ``mysql:``, ``sqlite:`` without
    the ``//``. It raises ``malformed(location without its password)``; each database words its own message.
    """
    if _URL.match(location):
        return location
    if "://" in location or _ONE_SLASH.match(location) or location.startswith(_DIALECTS):
        raise malformed(redact_url(location))
    return f"sqlite:///{Path(location).expanduser().resolve()}"


def not_sqlite_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a non-empty file that does not start with :data:`SQLITE_HEADER`: a file no database
    may be opened on. A missing or empty file is not one (SQLite creates or fills it)."""
    p = Path(path)
    if not p.is_file() or not p.stat().st_size:
        return False
    with open(p, "rb") as f:
        return f.read(len(SQLITE_HEADER)) != SQLITE_HEADER


def first_error_line(e: BaseException, *urls: object) -> str:
    """The first line of a (driver's) error message, with every URL in it and every secret of ``urls`` hidden.

    SQLAlchemy's wrapper is skipped for the driver's own error (``e.orig``); an empty message gives the
    exception's type name.
    """
    text = str(getattr(e, "orig", None) or e).strip()
    return scrub(text.splitlines()[0] if text else type(e).__name__, urls)
