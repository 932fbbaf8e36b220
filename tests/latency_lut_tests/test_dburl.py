"""Database locations shared by the LUT and the Optuna storage: URL resolution, the SQLite-file check, and a
driver error's first line without secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from latency_lut import database_url, first_error_line, not_sqlite_file


class Malformed(Exception):
    pass


@pytest.mark.parametrize("url", ["sqlite:///a.db", "sqlite:////abs/a.db", "postgresql://u:pw@h/db", "nonsense://x",
                                 "postgresql+psycopg://u:pw@x@h:5/db"])
def test_urls_pass_as_they_are(url):
    assert database_url(url, Malformed) == url


@pytest.mark.parametrize("path", ["x.db", "sub/x.db", "C:/lut.db", "a:b"])
def test_file_paths_become_absolute_sqlite_urls(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert database_url(path, Malformed) == f"sqlite:///{(tmp_path / path).resolve()}"


@pytest.mark.parametrize("location", ["postgresql:/u:pw9731@h/db", "ab:/x", "sqlite:foo.db", "mysql:x",
                                      "postgresql:u:pw9731@h", "x/a://b", "://foo"])
def test_mistyped_urls_are_refused_without_their_password(location, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Malformed) as e:
        database_url(location, Malformed)
    assert "9731" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_not_sqlite_file(tmp_path):
    assert not not_sqlite_file(tmp_path / "missing.db")
    assert not not_sqlite_file(tmp_path)  # a folder: each database words its own refusal
    empty = tmp_path / "empty.db"
    empty.touch()
    assert not not_sqlite_file(empty)
    real = tmp_path / "real.db"
    import sqlite3

    with sqlite3.connect(real) as con:
        con.execute("create table t (x)")
    assert real.read_bytes()[:16] == b"SQLite format 3\x00" and not not_sqlite_file(real)
    other = tmp_path / "other.db"
    other.write_bytes(b"SQLite format 3?" + b"x" * 100)
    assert not_sqlite_file(other) and not_sqlite_file(Path(str(other)))


def test_first_error_line_hides_urls_and_secrets():
    class Wrapped(Exception):
        orig = ValueError("connection to postgresql://u:pw9731@h/db failed\nDETAIL: pw9731 again")

    assert first_error_line(Wrapped("wrapper text")) == "connection to postgresql://u:***@h/db failed"
    assert first_error_line(RuntimeError("bad password 'pw9731'"), "postgresql://u:pw9731@h/db") == \
        "bad password '***'"
    assert first_error_line(KeyError()) == "KeyError"
