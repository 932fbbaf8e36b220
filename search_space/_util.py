"""Helpers that every package uses: atomic file writes and integer argument checks.

They live here because ``search_space`` sits at the bottom of the dependency order (``search_space`` <-
``latency_lut`` <- ``nas``); the other packages use them through ``search_space``'s public names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXPECTED", "MUST_BE", "atomic_path", "atomic_write", "check_int", "is_int", "is_number"]


# -- atomic writes ------------------------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write the new content of ``path`` to; it replaces ``path`` when the block ends.

    The temporary file is ``.<name>.tmp<pid><suffix>`` in the same folder (one file system, so ``os.replace``
    is atomic): readers see the old file or the new one, never a part of one. If the block raises, the
    temporary file is removed and ``path`` is left as it was. ``suffix`` keeps an extension that a writer
    needs (matplotlib picks the image format from it). Nothing is fsynced.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only there if something failed


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace ``path`` atomically with ``data``: bytes as they are, text as UTF-8 (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


# -- argument checks ----------------------------------------------------------------------------------------
def is_int(value: Any, *, numpy: bool = False) -> bool:
    """Whether ``value`` is an ``int`` (with ``numpy``: or a numpy integer); a bool is not."""
    return isinstance(value, (int, np.integer) if numpy else int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is an ``int`` or a ``float`` (numpy floats included); a bool is not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: Message forms of :func:`check_int`: ``latency_lut`` and ``nas`` say ``NAME must be WHAT, got VALUE``,
#: ``search_space`` (genome fields, model arguments) ``NAME: expected WHAT, got VALUE``.
MUST_BE = "{name} must be {what}, got {value!r}"
EXPECTED = "{name}: expected {what}, got {value!r}"


def check_int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None, optional: bool = False,
              numpy: bool = False, what: str | None = None, error: type[Exception] = ValueError,
              message: str = MUST_BE) -> int | None:
    """``value`` as an ``int`` if it is an integer (not a bool) in ``[lo, hi]``; None if it is None and ``optional``.

    Anything else raises ``error(message)``, ``message`` formatted with ``name``, ``value`` and ``what``: the
    accepted values in words, by default from the bounds ("a positive integer", "a non-negative integer",
    "an integer in [8, 1024]", "an integer >= 2"), with " or None" added when ``optional``. ``numpy`` accepts
    numpy integers too.
    """
    if value is None and optional:
        return None
    if is_int(value, numpy=numpy) and (lo is None or value >= lo) and (hi is None or value <= hi):
        return int(value)
    what = (what or _int_words(lo, hi)) + (" or None" if optional else "")
    raise error(message.format(name=name, what=what, value=value))


def _int_words(lo: int | None, hi: int | None) -> str:
    if hi is not None:
        return f"an integer in [{lo}, {hi}]" if lo is not None else f"an integer <= {hi}"
    if lo is None:
        return "an integer"
    return {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
