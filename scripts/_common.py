"""Shared helpers for benchmark scripts: machine description and BENCHMARKS.md section updates."""

from __future__ import annotations

import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    import onnxruntime
    import torch

    from latency_lut import cpu_description

    return (f"{cpu_description()}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")


def update_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the block between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    header = "# Benchmarks\n\nEvery figure here comes from a script in `scripts/`.\n"
    text = path.read_text() if path.exists() else header
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def append_jsonl(path: Path, record: dict) -> None:
    """Append ``record`` as one JSON line, in one write, flushed to disk; earlier bytes are never rewritten.

    If the file does not end with a newline (a line cut short by an interrupted write), a newline is written first
    so that the new record starts a line of its own (the cut line stays, and readers report it as malformed).
    """
    import json
    import os

    line = json.dumps(record, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """``(line number, object)`` for each JSON-object line of ``path``, and one message per line that is not one.

    Blank lines are skipped silently; a missing file reads as empty.
    """
    import json

    if not path.exists():
        return [], []
    records: list[tuple[int, dict]] = []
    problems: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problems.append(f"line {number}: not JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"line {number}: expected a JSON object, got {type(obj).__name__}")
                continue
            records.append((number, obj))
    return records, problems
