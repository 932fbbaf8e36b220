"""Devices and their cost sources: measured here, predicted by a cost model, or remote (bundle/import)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import UnknownDeviceError

__all__ = ["DeviceInfo", "builtin_devices", "get_device"]

_REMOTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    kind: str  # measured | predicted | remote
    backend: str
    description: str

    @property
    def measured_here(self) -> bool:
        return self.kind == "measured"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def builtin_devices() -> dict[str, DeviceInfo]:
    devs = {
        "ort-cpu": DeviceInfo("ort-cpu", "measured", "onnxruntime-cpu",
                              "onnxruntime CPU execution provider on this machine (threads set explicitly)"),
        "torch-cpu": DeviceInfo("torch-cpu", "measured", "torch-cpu", "PyTorch eager on this machine's CPU"),
        "iphone12": DeviceInfo("iphone12", "predicted", "costmodel-iphone12",
                               "Apple iPhone 12 (A14, Core ML): PREDICTED by a per-operator cost model calibrated on "
                               "published latencies; no iPhone is measured"),
    }
    if _cuda():
        devs["torch-cuda"] = DeviceInfo("torch-cuda", "measured", "torch-cuda", "PyTorch eager on this machine's GPU")
    return devs


def get_device(name: str, *, allow_remote: bool = False) -> DeviceInfo:
    """Look a device up; with ``allow_remote`` any well-formed new name is a remote device."""
    devs = builtin_devices()
    if name in devs:
        return devs[name]
    if name == "torch-cuda":
        raise UnknownDeviceError("device 'torch-cuda' needs a CUDA GPU, and none is visible here")
    if allow_remote and isinstance(name, str) and _REMOTE_NAME.match(name):
        return DeviceInfo(name, "remote", "onnxruntime-remote", f"remote device {name!r} (bundle/import)")
    raise UnknownDeviceError(
        f"unknown device {name!r}; known devices: {', '.join(sorted(devs))}"
        + ("" if allow_remote else " (or a remote device name that has rows in the LUT; see `bundle`/`import`)")
    )
