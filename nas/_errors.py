"""Errors of the search package; all derive from :class:`search_space.RepNASError`."""

from __future__ import annotations

from search_space import RepNASError

__all__ = [
    "DatasetNotFoundError", "ExportError", "NASError", "ProxyTrainingError", "SearchConfigError", "StudyStorageError",
]


class NASError(RepNASError):
    """Root of the errors raised by ``nas``."""


class SearchConfigError(NASError, ValueError):
    """A search option is invalid (unknown sampler, impossible latency budget, SQLite with several workers...)."""


class DatasetNotFoundError(NASError, FileNotFoundError):
    """A dataset is missing; the message lists every place that was searched."""


class ProxyTrainingError(NASError):
    """Proxy training of a candidate failed (NaN loss, divergence); ``reason`` says why."""

    def __init__(self, message: str, *, reason: str = "failed") -> None:
        super().__init__(message)
        self.reason = reason


class StudyStorageError(NASError, ValueError):
    """The Optuna storage URL is malformed or unreachable, or the study/trial asked for does not exist."""


class ExportError(NASError, ValueError):
    """A trial cannot be exported (unknown, failed or running; missing weights; a non-empty folder without
    ``--force``; an ONNX file that disagrees with torch)."""
