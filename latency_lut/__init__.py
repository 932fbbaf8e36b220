"""Device latency lookup tables: measured (ort-cpu, torch-cpu, torch-cuda), predicted (iphone12), remote.

``predict_latency(genome, device, resolution=224)`` and ``predict_model_latency(module, device, input_size)``
return milliseconds for the deployed (re-parameterized) form. Each device is a :class:`LatencySource`
(``get_device(name)``): measured here, predicted by a cost model, or imported from a remote device; it
prices units and labels its figures (``latency_label(device)``, ``source_word(device)``). See
``python -m latency_lut --help`` and docs/lut.md.
"""

from __future__ import annotations

from ._bundle import import_results as import_results
from ._bundle import write_bundle as write_bundle
from ._calibration import GOALS as CALIBRATION_GOALS
from ._costmodel import CostModel as CostModel
from ._costmodel import CostModelError as CostModelError
from ._db import LatencyRecord as LatencyRecord
from ._db import LatencyTable as LatencyTable
from ._db import NetworkCorrection as NetworkCorrection
from ._db import Source as Source
from ._db import open_table as open_table
from ._dburl import database_url as database_url
from ._dburl import first_error_line as first_error_line
from ._dburl import not_sqlite_file as not_sqlite_file
from ._devices import DeviceInfo as DeviceInfo
from ._devices import builtin_devices as builtin_devices
from ._devices import calibration_summary as calibration_summary
from ._devices import clear_caches as clear_caches
from ._devices import get_device as get_device
from ._devices import latency_label as latency_label
from ._devices import register_device as register_device
from ._devices import source_word as source_word
from ._devices import unregister_device as unregister_device
from ._errors import LatencyLookupError as LatencyLookupError
from ._errors import LUTStorageError as LUTStorageError
from ._errors import ResultsFileError as ResultsFileError
from ._errors import UnknownDeviceError as UnknownDeviceError
from ._features import graph_features as graph_features
from ._iphone12 import calibrate as calibrate_iphone12
from ._iphone12 import load_cost_model as load_iphone12_cost_model
from ._lut import build_lut as build_lut
from ._lut import calibrate_network as calibrate_network
from ._lut import check_threads as check_threads
from ._lut import network_correction as network_correction
from ._lut import predict_latency as predict_latency
from ._lut import predict_model_latency as predict_model_latency
from ._measure import backend_versions as backend_versions
from ._measure import cpu_description as cpu_description
from ._measure import measure_onnx_file as measure_onnx_file
from ._secrets import redact_url as redact_url
from ._secrets import scrub as scrub
from ._signatures import Unit as Unit
from ._signatures import units_of_genome as units_of_genome
from ._sources import CostModelSource as CostModelSource
from ._sources import LatencySource as LatencySource
from ._sources import MeasuredSource as MeasuredSource
from ._sources import RemoteSource as RemoteSource
from ._timing import interleaved_timings as interleaved_timings
from ._validate import validate_lut as validate_lut

__all__ = [
    "CALIBRATION_GOALS",
    "CostModel",
    "CostModelError",
    "CostModelSource",
    "DeviceInfo",
    "LUTStorageError",
    "LatencyLookupError",
    "LatencyRecord",
    "LatencySource",
    "LatencyTable",
    "MeasuredSource",
    "NetworkCorrection",
    "RemoteSource",
    "ResultsFileError",
    "Source",
    "UnknownDeviceError",
    "Unit",
    "backend_versions",
    "build_lut",
    "builtin_devices",
    "calibrate_iphone12",
    "load_iphone12_cost_model",
    "calibration_summary",
    "check_threads",
    "clear_caches",
    "cpu_description",
    "database_url",
    "first_error_line",
    "get_device",
    "graph_features",
    "import_results",
    "interleaved_timings",
    "latency_label",
    "measure_onnx_file",
    "network_correction",
    "not_sqlite_file",
    "open_table",
    "predict_latency",
    "predict_model_latency",
    "redact_url",
    "register_device",
    "scrub",
    "source_word",
    "units_of_genome",
    "unregister_device",
    "validate_lut",
    "write_bundle",
]

