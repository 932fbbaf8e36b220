"""The one redaction rule: no password or secret query value survives redact_url or scrub."""

from __future__ import annotations

import pytest

from latency_lut import redact_url, scrub

CASES = [
    ("postgresql://nas:pw9731@db:5432/nas", "postgresql://nas:***@db:5432/nas"),
    ("postgresql+psycopg://:pw9731@db/nas", "postgresql+psycopg://:***@db/nas"),  # no user name
    ("postgresql://nas@db/nas?password=pw9731&sslmode=require", "postgresql://nas@db/nas?password=***&sslmode=require"),
    ("postgresql:/nas:pw9731@db/nas", "postgresql:/nas:***@db/nas"),  # malformed: one slash
    ("postgresql://nas:pw@9731@db/nas", "postgresql://nas:***@db/nas"),  # unencoded @ in the password
    ("postgresql://nas:pw%409731@db/nas", "postgresql://nas:***@db/nas"),  # percent-encoded
    ("postgresql://nas:pw?9731@db/nas", "postgresql://nas:***@db/nas"),  # unencoded ? in the password
    ("postgresql:/nas:pw?9731@db/nas", "postgresql:/nas:***@db/nas"),
    ("postgresql://nas:pw/9731@db/nas", "postgresql://nas:***@db/nas"),  # unencoded / in the password
    ("mysql://u:pw9731@h/db?ssl_key=x&sslpassword=pw9731", "mysql://u:***@h/db?ssl_key=x&sslpassword=***"),
]


@pytest.mark.parametrize("url, want", CASES)
def test_redact_url_hides_the_password(url, want):
    assert redact_url(url) == want
    assert "9731" not in redact_url(url)


@pytest.mark.parametrize("url", ["sqlite:////tmp/a@b/search.db", "sqlite:///x.db", "repnas-search.db"])
def test_urls_without_secrets_are_unchanged(url):
    assert redact_url(url) == url


def test_redact_url_takes_sqlalchemy_urls():
    from sqlalchemy.engine import make_url

    assert redact_url(make_url("postgresql://u:pw9731@h/db")) == "postgresql://u:***@h/db"


def test_scrub_hides_urls_and_known_secrets_in_free_text():
    url = "postgresql://nas:pw9731@db/nas"
    msg = f"cannot open storage '{url}': FATAL: password 'pw9731' rejected; also postgresql:/x:pw9731@h/d"
    out = scrub(msg, [url])
    assert "pw9731" not in out and "postgresql://nas:***@db/nas" in out
    # a secret from a URL SQLAlchemy cannot parse is still known
    assert "pw@9731" not in scrub("echo pw@9731", ["postgresql://nas:pw@9731@db/nas"])
    assert scrub("nothing secret here", ["sqlite:///x.db"]) == "nothing secret here"


def test_scrub_keeps_the_punctuation_after_a_url():
    out = scrub("open postgresql://u:pw9731@h/db?password=pw9731: failed (see sqlite:///x.db).")
    assert out == "open postgresql://u:***@h/db?password=***: failed (see sqlite:///x.db)."
