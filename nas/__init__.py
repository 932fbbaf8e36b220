"""RepNAS search, proxy training, reports and export; see ``docs/architecture.md``, sections 3-6.

Commands: ``python -m nas.search`` and ``python -m nas.export``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import SearchConfig as SearchConfig
    from ._config import SearchResult as SearchResult
    from ._data import DATASETS as DATASETS
    from ._data import ProxyData as ProxyData
    from ._data import load_dataset as load_dataset
    from ._data import stratified_indices as stratified_indices
    from ._errors import DatasetNotFoundError as DatasetNotFoundError
    from ._errors import ExportError as ExportError
    from ._errors import NASError as NASError
    from ._errors import ProxyTrainingError as ProxyTrainingError
    from ._errors import SearchConfigError as SearchConfigError
    from ._errors import StudyStorageError as StudyStorageError
    from ._export import ExportResult as ExportResult
    from ._export import export_pareto as export_pareto
    from ._export import export_trial as export_trial
    from ._proxy import ProxyConfig as ProxyConfig
    from ._proxy import ProxyResult as ProxyResult
    from ._proxy import proxy_resolution as proxy_resolution
    from ._proxy import train_proxy as train_proxy
    from ._search import run_search as run_search
    from ._search import write_report as write_report
    from ._zerocost import ZERO_COST_METHODS as ZERO_COST_METHODS
    from ._zerocost import zero_cost_score as zero_cost_score

# Everything is imported on first use: ``import nas`` stays fast (torch, timm and search_space load only when a
# name below is touched; even the errors derive from ``search_space.RepNASError``).
_LAZY: dict[str, str] = {
    "DATASETS": "._data",
    "ProxyData": "._data",
    "load_dataset": "._data",
    "stratified_indices": "._data",
    "DatasetNotFoundError": "._errors",
    "ExportError": "._errors",
    "NASError": "._errors",
    "ProxyTrainingError": "._errors",
    "SearchConfigError": "._errors",
    "StudyStorageError": "._errors",
    "ExportResult": "._export",
    "export_pareto": "._export",
    "export_trial": "._export",
    "ProxyConfig": "._proxy",
    "ProxyResult": "._proxy",
    "proxy_resolution": "._proxy",
    "train_proxy": "._proxy",
    "SearchConfig": "._config",
    "SearchResult": "._config",
    "run_search": "._search",
    "write_report": "._search",
    "ZERO_COST_METHODS": "._zerocost",
    "zero_cost_score": "._zerocost",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
