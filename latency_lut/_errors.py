"""Errors of the latency LUT (all derive from ``search_space.RepNASError``)."""

from __future__ import annotations

from search_space import RepNASError

__all__ = ["LatencyLookupError", "LUTStorageError", "ResultsFileError", "UnknownDeviceError"]


class UnknownDeviceError(RepNASError, ValueError):
    """A device name that no backend, cost model or LUT row knows."""


class LUTStorageError(RepNASError):
    """The LUT database cannot be opened or written (bad URL, unreachable server, corrupt file)."""


class LatencyLookupError(RepNASError):
    """A latency entry is missing and cannot be measured or predicted on demand."""


class ResultsFileError(RepNASError, ValueError):
    """A remote results file is malformed or does not match the device or the bundle."""
