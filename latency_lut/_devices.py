"""The devices: each name is one latency source (``_sources``), measured here, predicted, or remote.

Built-in devices are registered below; :func:`register_device` adds another (for example a second phone with a
calibrated cost model: a :class:`~latency_lut._sources.CostModelSource` and its JSON file). Any other
well-formed name is a remote device (bundle/import) once it is asked for with ``allow_remote``.
"""

from __future__ import annotations

import re

from ._errors import UnknownDeviceError
from ._iphone12 import IPHONE12
from ._sources import LatencySource, MeasuredSource, RemoteSource

__all__ = ["DeviceInfo", "builtin_devices", "calibration_summary", "clear_caches", "get_device", "latency_label",
           "register_device", "source_word", "unregister_device"]

_REMOTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

#: The older name of a device's description; every device is now its latency source.
DeviceInfo = LatencySource

_REGISTERED: dict[str, LatencySource] = {}
_REMOTE: dict[str, RemoteSource] = {}  # one source per remote name, so what it caches is kept


def register_device(source: LatencySource, *, replace: bool = False) -> LatencySource:
    """Make ``source`` a built-in device under ``source.name``; returns it.

    Raises:
        ValueError: The name is already registered (unless ``replace``) or not well formed.
    """
    if not isinstance(source, LatencySource):
        raise TypeError(f"register_device needs a LatencySource, got {type(source).__name__}")
    if not isinstance(source.name, str) or not _REMOTE_NAME.match(source.name):
        raise ValueError(f"device name {source.name!r} is not well formed (lower case letters, digits, ._-)")
    if source.name in _REGISTERED and not replace:
        raise ValueError(f"device {source.name!r} is already registered")
    _REGISTERED[source.name] = source
    _REMOTE.pop(source.name, None)
    return source


def unregister_device(name: str) -> None:
    """Remove a registered device (tests); its name becomes a possible remote device again."""
    _REGISTERED.pop(name, None)


def builtin_devices() -> dict[str, LatencySource]:
    """The registered devices usable here (``torch-cuda`` only when a GPU is visible)."""
    return {name: src for name, src in _REGISTERED.items() if src.available()}


def get_device(name: str, *, allow_remote: bool = False) -> LatencySource:
    """Look a device up; with ``allow_remote`` any well-formed new name is a remote device."""
    src = _REGISTERED.get(name) if isinstance(name, str) else None
    if src is not None:
        if not src.available():
            raise UnknownDeviceError(src.unavailable_reason())
        return src
    if allow_remote and isinstance(name, str) and _REMOTE_NAME.match(name):
        return _REMOTE.setdefault(name, RemoteSource(name))
    raise UnknownDeviceError(
        f"unknown device {name!r}; known devices: {', '.join(sorted(builtin_devices()))}"
        + ("" if allow_remote else " (or a remote device name that has rows in the LUT; see `bundle`/`import`)")
    )


def registered_device(name: str) -> LatencySource | None:
    """The registered device called ``name`` (available or not), or None."""
    return _REGISTERED.get(name) if isinstance(name, str) else None


def latency_label(device: str) -> str:
    """How a latency figure of ``device`` is labelled wherever it is shown (search table, report, plot, export
    card, CLI): measured on what, imported from where, or PREDICTED with what error."""
    return get_device(device, allow_remote=True).label()


def source_word(device: str) -> str:
    """``measured``, ``predicted`` or ``imported``: what a figure of ``device`` records as its source."""
    return get_device(device, allow_remote=True).source_word


def calibration_summary(device: str = "iphone12") -> dict:
    """The calibration record (leave-one-family-out table and figures) of a device predicted by a cost model.

    Raises:
        ValueError: ``device`` is not predicted (its figures are measured, so there is no calibration).
    """
    summary = get_device(device, allow_remote=True).calibration_summary()
    if summary is None:
        raise ValueError(f"device {device!r} is measured, not predicted by a cost model: it has no calibration")
    return summary


def clear_caches() -> None:
    """Forget what every device derived from LUTs (re-priced rows, overheads, corrections, warnings given)."""
    for src in (*_REGISTERED.values(), *_REMOTE.values()):
        src.clear_cache()


register_device(MeasuredSource("ort-cpu", "onnxruntime-cpu",
                               "onnxruntime CPU execution provider on this machine (threads set explicitly)",
                               single_thread=True))
register_device(MeasuredSource("torch-cpu", "torch-cpu", "PyTorch eager on this machine's CPU"))
register_device(IPHONE12)
register_device(MeasuredSource("torch-cuda", "torch-cuda", "PyTorch eager on this machine's GPU", requires_cuda=True))
