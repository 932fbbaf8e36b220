"""Building LUTs and predicting latency from them."""

from __future__ import annotations

import copy
import datetime as _dt
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from torch import nn

from search_space import Genome, SearchSpace, reparameterize

from ._db import LatencyRecord, LatencyTable, Source
from ._devices import DeviceInfo, get_device
from ._errors import LatencyLookupError
from ._measure import backend_versions, call_overhead_ms, measure_module
from ._signatures import Unit, build_unit, enumerate_space, signature_key, units_of_genome

__all__ = ["build_lut", "predict_latency", "predict_model_latency", "unit_latency"]

_logger = logging.getLogger(__name__)


def _table(db: LatencyTable | str | None) -> LatencyTable:
    return db if isinstance(db, LatencyTable) else LatencyTable(db)


def _new_record(device: DeviceInfo, sig: dict[str, Any], *, threads: int, runs: int, warmup: int) -> LatencyRecord:
    now = _dt.datetime.now(_dt.timezone.utc)
    module = build_unit(sig)
    shape = tuple(sig["in"])
    if device.kind == "measured":
        stats = measure_module(module, shape, device=device.name, threads=threads, warmup=warmup, runs=runs)
        overhead = call_overhead_ms(device.name, threads)
        versions = dict(backend_versions(device.name), call_overhead_ms=f"{overhead:.5f}")
        shift = lambda v: max(v - overhead, 0.0)  # noqa: E731
        return LatencyRecord(
            device=device.name, signature_key=signature_key(sig), block_type=sig["type"], signature=sig,
            median_ms=shift(stats.median_ms), p10_ms=shift(stats.p10_ms), p90_ms=shift(stats.p90_ms),
            runs=stats.runs, source=Source.MEASURED, backend=device.backend, versions=versions, threads=threads,
            created_at=now,
        )
    if device.kind == "predicted":
        try:
            from ._iphone12 import load_cost_model, unit_cost_ms
        except ImportError:
            raise LatencyLookupError(f"device {device.name!r} has no calibrated cost model in this installation "
                                     "(its cost model module is not available)") from None

        model = load_cost_model()
        ms = unit_cost_ms(module, shape, model)
        return LatencyRecord(
            device=device.name, signature_key=signature_key(sig), block_type=sig["type"], signature=sig,
            median_ms=ms, p10_ms=ms, p90_ms=ms, runs=0, source=Source.PREDICTED, backend=device.backend,
            versions={"cost_model": model.version}, threads=0, created_at=now,
        )
    raise LatencyLookupError(
        f"no LUT entry for {sig['type']} {signature_key(sig)} on remote device {device.name!r}; write a bundle "
        f"(python -m latency_lut bundle --device {device.name} --out DIR), run it there, and import the results"
    )


def unit_latency(unit: Unit, device: str | DeviceInfo, *, db: LatencyTable | str | None = None,
                 threads: int = 1, on_demand: bool = True, runs: int = 30, warmup: int = 5) -> float:
    """The LUT latency of one unit (ms, overhead removed); missing entries measured/predicted on demand."""
    dev = device if isinstance(device, DeviceInfo) else get_device(device, allow_remote=True)
    table = _table(db)
    rec = table.get(dev.name, unit.key)
    if rec is None:
        if not on_demand and dev.kind != "predicted":
            raise LatencyLookupError(f"no LUT entry for {unit.block_type} {unit.key} on {dev.name!r} in "
                                     f"{table.url}; run `python -m latency_lut build --device {dev.name}`")
        rec = _new_record(dev, unit.signature, threads=threads, runs=runs, warmup=warmup)
        table.add(rec)
    return rec.median_ms


#: (LUT url, device) -> (number of rows when computed, median call overhead of its imported rows)
_remote_overhead_cache: dict[tuple[str, str], tuple[int, float]] = {}


def _remote_call_overhead_ms(table: LatencyTable, device: str, n_rows: int) -> float:
    """Median per-call overhead recorded by the imported rows of a remote device (0 if none recorded it).

    Rows are never overwritten or deleted, so the cached value stays valid while the row count is unchanged.
    """
    cached = _remote_overhead_cache.get((table.url, device))
    if cached is not None and cached[0] == n_rows:
        return cached[1]
    values = []
    for rec in table.records(device):
        try:
            values.append(float(rec.versions["call_overhead_ms"]))
        except (KeyError, TypeError, ValueError):
            continue
    ms = float(np.median(values)) if values else 0.0
    _remote_overhead_cache[(table.url, device)] = (n_rows, ms)
    return ms


def _network_offset(dev: DeviceInfo, threads: int, table: LatencyTable | None = None) -> float:
    """What a whole network pays once on top of its units: the call overhead, or the cost model's intercept.

    Measured devices time their overhead here; a remote device uses the overhead its runner measured there
    (recorded with the imported rows); the predicted device uses its cost model's intercept.
    """
    if dev.kind == "measured":
        return call_overhead_ms(dev.name, threads)
    if dev.kind == "predicted":
        from ._iphone12 import load_cost_model

        return load_cost_model().intercept_ms
    if table is None:
        return 0.0
    return _remote_call_overhead_ms(table, dev.name, len(table.keys(dev.name)))


def predict_latency(genome: Genome, device: str, resolution: int = 224, *, db: LatencyTable | str | None = None,
                    num_classes: int = 1000, threads: int = 1, on_demand: bool = True) -> float:
    """Latency of ``genome``'s deployed network at ``resolution`` on ``device`` (ms), summed from the LUT."""
    dev = get_device(device, allow_remote=True)
    table = _table(db)
    if dev.kind == "remote" and not table.keys(dev.name):
        from ._errors import UnknownDeviceError

        raise UnknownDeviceError(f"unknown device {device!r}: not a built-in device, and {table.url} has no rows "
                                 "for it (a remote device gets rows through `bundle` and `import`)")
    units = units_of_genome(genome, resolution, num_classes)
    total = sum(u.count * unit_latency(u, dev, db=table, threads=threads, on_demand=on_demand) for u in units)
    return total + _network_offset(dev, threads, table)


def predict_model_latency(module: nn.Module, device: str, input_size: Sequence[int] = (3, 224, 224), *,
                          threads: int = 1, runs: int = 30) -> float:
    """Latency of any ``nn.Module``'s deployed form (ms): measured end to end, or predicted by the cost model."""
    dev = get_device(device)
    deployed = reparameterize(copy.deepcopy(module).eval())
    if dev.kind == "measured":
        return measure_module(deployed, tuple(input_size), device=dev.name, threads=threads, runs=runs).median_ms
    from ._iphone12 import predict_module_ms

    return predict_module_ms(deployed, tuple(input_size))


def _signatures_to_do(
        device: str, table: LatencyTable, *, space: SearchSpace | None = None, genomes: Iterable[Genome] | None = None,
        resolution: int = 224, num_classes: int = 1000,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The signatures of ``genomes`` (or of ``space``, default the whole space at ``resolution``), each once,
    and those of them that ``device`` has no row for in ``table``."""
    if genomes is not None:
        sigs: dict[str, dict[str, Any]] = {}
        for g in genomes:
            for u in units_of_genome(g, resolution, num_classes):
                sigs.setdefault(u.key, u.signature)
        todo_all = list(sigs.values())
    else:
        todo_all = list(enumerate_space(space or SearchSpace(resolution=resolution), num_classes))
    have = table.keys(device)
    return todo_all, [s for s in todo_all if signature_key(s) not in have]


def build_lut(device: str, *, db: LatencyTable | str | None = None, space: SearchSpace | None = None,
              genomes: Iterable[Genome] | None = None, resolution: int = 224, num_classes: int = 1000,
              threads: int = 1, runs: int = 30, warmup: int = 5, progress: bool = True) -> dict[str, int]:
    """Fill the LUT for ``device`` with every signature of ``space`` (or of ``genomes``); resumable.

    Rows already present are skipped; each new row is committed as soon as it is measured, so a build
    killed at any point loses at most the row in flight.
    """
    dev = get_device(device)
    table = _table(db)
    todo_all, todo = _signatures_to_do(dev.name, table, space=space, genomes=genomes, resolution=resolution,
                                       num_classes=num_classes)
    _logger.info("%s: %d signatures, %d already in %s, %d to %s", dev.name, len(todo_all), len(todo_all) - len(todo),
                 table.url, len(todo), "measure" if dev.kind == "measured" else "predict")
    from tqdm.auto import tqdm

    added = 0
    for sig in tqdm(todo, desc=f"LUT {dev.name}", unit="block", disable=not progress):
        if table.add(_new_record(dev, sig, threads=threads, runs=runs, warmup=warmup)):
            added += 1
    return {"total": len(todo_all), "skipped": len(todo_all) - len(todo), "added": added}
