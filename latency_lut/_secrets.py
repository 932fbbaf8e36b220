"""Database URLs without their secrets: the one place passwords are taken out of URLs and messages.

Every message, log line and file that names a database (the LUT database, the search's Optuna storage, an
export card) passes the URL through :func:`redact_url`; error texts that might quote a URL or a password (a
driver's message, a malformed URL echoed back) pass through :func:`scrub`. Well-formed URLs are parsed with
SQLAlchemy and rendered with ``hide_password=True``; anything SQLAlchemy cannot parse (``postgresql:/u:pw@h``,
an unencoded ``@`` in the password) is redacted by pattern, erring on the side of hiding too much. Query
parameters that carry secrets (``?password=``, ``sslpassword``, ``token`` ...) are masked as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["MASK", "redact_url", "scrub", "url_secrets"]

MASK = "***"

#: Query-parameter names whose values are secrets (matched case-insensitively, as a substring).
_SECRET_KEYS = ("password", "passwd", "pwd", "secret", "token", "apikey", "api_key")
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:[^=&;#\s]*(?:" + "|".join(_SECRET_KEYS) + r")[^=&;#\s]*)=)([^&;#\s]*)")
#: ``scheme:`` with any number of slashes, then ``userinfo@``; the userinfo runs to the *last* ``@`` before the
#: query, so an unencoded ``@`` in the password is hidden with the rest of it.
_MIN_FREE_TEXT_SECRET = 4
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*:/*)(?P<rest>.*)$", re.S)


def redact_url(url: object) -> str:
    """``url`` (a string or a SQLAlchemy ``URL``) as text that holds no password or secret query parameter."""
    text = url.render_as_string(hide_password=True) if hasattr(url, "render_as_string") else str(url)
    m = _SCHEME.match(text)
    if m:
        parts = _userinfo(m.group("rest"))
        if parts is not None:
            user, _, host = parts
            text = f"{m.group('scheme')}{user}:{MASK}@{host}"
    return _QUERY_SECRET.sub(lambda q: q.group(1) + MASK, text)


def _userinfo(rest: str) -> tuple[str, str, str] | None:
    """``(user, password, rest-after-@)`` of ``user:password@host...``, the password running to the *last* ``@``
    (so ``?``, ``/`` or ``@`` inside an unencoded password stay hidden); None without credentials."""
    if "@" not in rest:
        return None
    userinfo, _, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not colon or "/" in user:  # no password, or a path (sqlite:////tmp/a:b@c.db)
        return None
    return user, password, host


def url_secrets(url: object) -> list[str]:
    """The secret strings of ``url`` (its password, raw and percent-decoded; secret query values)."""
    text = url.render_as_string(hide_password=False) if hasattr(url, "render_as_string") else str(url)
    found: list[str] = []
    m = _SCHEME.match(text)
    parts = _userinfo(m.group("rest")) if m else None
    if parts is not None:
        found.append(parts[1])
    found += [q.group(2) for q in _QUERY_SECRET.finditer(text)]
    out: list[str] = []
    for s in found:
        for v in (s, unquote(s)):
            if v and v != MASK and v not in out:
                out.append(v)
    return out


def scrub(text: object, urls: Iterable[object] = ()) -> str:
    """``text`` with every URL in it redacted and every secret of ``urls`` replaced by ``***``.

    Use it on any message that may quote a database URL or a driver's error about one.
    """
    s = str(text)
    for secret in sorted({x for u in urls if u for x in url_secrets(u)}, key=len, reverse=True):
        if len(secret) >= _MIN_FREE_TEXT_SECRET:  # shorter ones would mangle words; URLs are redacted below
            s = s.replace(secret, MASK)
    # URLs embedded in free text: redact each whitespace- or quote-delimited token that looks like one
    return re.sub(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:/+[^\s'\"]+|[A-Za-z][A-Za-z0-9+.\-]*:/[^\s'\"]*@[^\s'\"]*)"
                  r"(?<![:,.;)])", lambda m: redact_url(m.group(0)), s)
