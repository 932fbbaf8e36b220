"""Device latency lookup tables: measured (ort-cpu, torch-cpu, torch-cuda), predicted (iphone12), remote.

``predict_latency(genome, device, resolution=224)`` and ``predict_model_latency(module, device, input_size)``
return milliseconds for the deployed (re-parameterized) form. See ``python -m latency_lut --help``.
"""

from __future__ import annotations

from ._bundle import import_results as import_results
from ._bundle import write_bundle as write_bundle
from ._db import LatencyRecord as LatencyRecord
from ._db import LatencyTable as LatencyTable
from ._db import Source as Source
from ._devices import DeviceInfo as DeviceInfo
from ._devices import builtin_devices as builtin_devices
from ._devices import get_device as get_device
from ._errors import LatencyLookupError as LatencyLookupError
from ._errors import LUTStorageError as LUTStorageError
from ._errors import ResultsFileError as ResultsFileError
from ._errors import UnknownDeviceError as UnknownDeviceError
from ._lut import build_lut as build_lut
from ._lut import predict_latency as predict_latency
from ._lut import predict_model_latency as predict_model_latency
from ._secrets import redact_url as redact_url
from ._secrets import scrub as scrub
from ._signatures import Unit as Unit
from ._signatures import units_of_genome as units_of_genome
from ._validate import validate_lut as validate_lut

__all__ = [
    "DeviceInfo",
    "LUTStorageError",
    "LatencyLookupError",
    "LatencyRecord",
    "LatencyTable",
    "ResultsFileError",
    "Source",
    "UnknownDeviceError",
    "Unit",
    "build_lut",
    "builtin_devices",
    "get_device",
    "import_results",
    "predict_latency",
    "predict_model_latency",
    "redact_url",
    "scrub",
    "units_of_genome",
    "validate_lut",
    "write_bundle",
]
