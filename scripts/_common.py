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

    from latency_lut._measure import cpu_description

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
