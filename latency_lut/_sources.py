"""Latency sources: where a device's figures come from, how a unit is priced, and how a figure is labelled.

Every device is one :class:`LatencySource` (the way Optuna's samplers share ``BaseSampler``):

- :class:`MeasuredSource`: timed on this machine (``ort-cpu``, ``torch-cpu``, ``torch-cuda``);
- :class:`CostModelSource`: PREDICTED by a calibrated cost model read from a JSON data file (``iphone12``);
- :class:`RemoteSource`: timed on another device by the bundle runner and imported (any other name).

A source knows how to price a unit that has no LUT row yet (:meth:`LatencySource.new_record`), what a
stored row is worth (:meth:`~LatencySource.unit_ms`), what a whole network pays once on top of its units
(:meth:`~LatencySource.network_offset`, :meth:`~LatencySource.correct`), how to price a whole module
(:meth:`~LatencySource.model_ms`), and how its figures are described: :meth:`~LatencySource.label`,
:meth:`~LatencySource.error_statement` and :attr:`~LatencySource.source_word`. ``latency_lut._lut`` only
looks rows up and adds them; it never asks which kind of device it has.

A second predicted device is a :class:`CostModelSource` instance (or a subclass, if its features differ)
with its own cost model JSON, registered with :func:`latency_lut.register_device`.

What a source derives from a LUT (re-priced rows, a remote device's per-call overhead, a network
correction, a warning already given) is cached on the source, per LUT URL: rows are never overwritten,
so a derived value stays valid for as long as the LUT holds the same rows.
"""

from __future__ import annotations

import abc
import datetime as _dt
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from search_space import check_int

from ._costmodel import CostModel, CostModelError, load_cost_model_file, summarize_calibration
from ._db import LatencyRecord, LatencyTable, NetworkCorrection, Source
from ._errors import LatencyLookupError, UnknownDeviceError
from ._features import graph_features
from ._measure import (
    EVICTED,
    backend_versions,
    call_overhead_ms,
    evict_bytes,
    measure_clocks,
    measure_module,
    unit_protocol,
)
from ._signatures import Unit, build_unit, signature_key

__all__ = ["MULTI_THREAD_REFUSAL", "CostModelSource", "LatencySource", "MeasuredSource", "RemoteSource",
           "predict_module_with", "unit_cost_with"]

_logger = logging.getLogger(__name__)

#: Why ort-cpu LUTs are built, validated and priced at one thread only.
MULTI_THREAD_REFUSAL = (
    "ort-cpu LUTs are built, validated and priced at 1 thread only (got threads={threads}): a LUT row times one "
    "block alone, and at more than one thread the sum of per-block timings does not add up to the multi-threaded "
    "network (at 2 threads it over-predicted the end-to-end onnxruntime latency of random genomes by +61% on "
    "average, 0 of 10 within +-10%; at 1 thread 10 of 10, MAPE 3.3%). Use threads=1 (--threads 1)"
)


def positive_int(name: str, value: Any) -> int:
    return check_int(name, value, lo=1, numpy=True)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class LatencySource(abc.ABC):
    """One device and where its latency figures come from (abstract base; see the module docstring).

    A subclass implements :meth:`new_record`, :meth:`network_offset`, :meth:`label` and
    :meth:`error_statement`, and sets :attr:`kind` and :attr:`source`; the rest has defaults.

    Attributes:
        name: The device name rows are stored under.
        backend: The backend written into each row.
        description: One line for ``python -m latency_lut devices``.
    """

    #: ``measured``, ``predicted`` or ``remote``: how the device is listed.
    kind: ClassVar[str] = ""
    #: What every row (and every trial priced on this device) records as its source.
    source: ClassVar[Source]
    #: Missing rows are made whenever a unit is priced, even with ``on_demand=False`` (a prediction is cheap).
    always_on_demand: ClassVar[bool] = False
    #: Whole networks can be timed here (``validate`` and network corrections need that).
    measures_networks: ClassVar[bool] = False
    #: What ``build`` does to a missing row.
    build_verb: ClassVar[str] = "measure"

    def __init__(self, name: str, backend: str, description: str) -> None:
        self.name = name
        self.backend = backend
        self.description = description

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- describing a figure -------------------------------------------------------------------------
    @property
    def source_word(self) -> str:
        """``measured``, ``predicted`` or ``imported``: the word recorded next to each figure."""
        return self.source.value

    @property
    def measured_here(self) -> bool:
        return self.measures_networks

    @abc.abstractmethod
    def label(self) -> str:
        """How a latency figure of this device is labelled wherever it is shown; never raises."""

    @abc.abstractmethod
    def error_statement(self) -> str:
        """What error goes with a figure of this device (one sentence); never raises."""

    def details(self) -> list[str]:
        """Further lines for ``python -m latency_lut devices`` (none by default)."""
        return []

    def calibration_summary(self) -> dict[str, Any] | None:
        """The calibration record of a predicted device (None where the figures are measured)."""
        return None

    def figure_error(self, module: nn.Module, input_size: Sequence[int]) -> str | None:
        """How far to trust this source's figure for one network, beyond :meth:`label` (``None``: the label
        says it all, as for a measured figure)."""
        return None

    def bundle_refusal(self, command: str) -> str | None:
        """Why ``bundle``/``import`` do not apply to this device, or None where they do."""
        return None

    def available(self) -> bool:
        """Whether the device can be used in this process (a GPU device needs a visible GPU)."""
        return True

    def unavailable_reason(self) -> str:
        return f"device {self.name!r} is not available here"

    # -- pricing -------------------------------------------------------------------------------------
    def check_threads(self, threads: Any) -> int:
        """``threads`` if rows of this device may be made or summed at it; else a ValueError saying why."""
        return positive_int("threads (--threads)", threads)

    def check_known(self, table: LatencyTable) -> None:
        """Raise UnknownDeviceError where ``table`` cannot price this device at all."""
        return None

    @abc.abstractmethod
    def new_record(self, signature: dict[str, Any], *, threads: int, runs: int, warmup: int) -> LatencyRecord:
        """A row for a unit that the LUT has none for: measured or predicted now."""

    def missing_row_error(self, table: LatencyTable, unit: Unit) -> LatencyLookupError:
        """The error for a missing row that is not to be made now."""
        return LatencyLookupError(f"no LUT entry for {unit.block_type} {unit.key} on {self.name!r} in "
                                  f"{table.safe_url}; run `python -m latency_lut build --device {self.name}`")

    def unit_ms(self, table: LatencyTable, unit: Unit, rec: LatencyRecord, *, threads: int) -> float:
        """What the stored row ``rec`` of ``unit`` adds to a network (ms, overhead removed)."""
        return rec.median_ms

    @abc.abstractmethod
    def network_offset(self, table: LatencyTable | None, threads: int) -> float:
        """What a whole network pays once on top of its units (ms)."""

    def correction(self, table: LatencyTable, *, threads: int, resolution: int) -> NetworkCorrection | None:
        """The network correction stored for this device, or None (only measured devices have one)."""
        return None

    def correct(self, table: LatencyTable, total_ms: float, n_units: int, *, threads: int, resolution: int) -> float:
        """The network figure from the plain LUT sum (units plus offset): through a stored correction if any."""
        corr = self.correction(table, threads=threads, resolution=resolution)
        return total_ms if corr is None else corr.apply(total_ms, n_units)

    def model_ms(self, deployed: nn.Module, input_size: tuple[int, ...], *, threads: int, runs: int) -> float:
        """Latency of a whole deployed module, end to end (ms)."""
        raise UnknownDeviceError(f"device {self.name!r} cannot price a whole module here")

    def clear_cache(self) -> None:
        """Forget what was derived from LUTs (tests; a LUT file deleted and written again at the same path)."""
        return None


class MeasuredSource(LatencySource):
    """A device timed on this machine: each row is a measurement of the unit (see ``_measure``).

    Args:
        single_thread: Rows are made and summed at one thread only (``MULTI_THREAD_REFUSAL`` says why).
        requires_cuda: The device needs a visible CUDA GPU.
    """

    kind = "measured"
    source = Source.MEASURED
    measures_networks = True

    def __init__(self, name: str, backend: str, description: str, *, single_thread: bool = False,
                 requires_cuda: bool = False) -> None:
        super().__init__(name, backend, description)
        self.single_thread = single_thread
        self.requires_cuda = requires_cuda
        self._corrections: dict[tuple[str, int, int], NetworkCorrection] = {}
        self._warned_protocol: set[str] = set()

    def available(self) -> bool:
        if not self.requires_cuda:
            return True
        import torch

        return torch.cuda.is_available()

    def unavailable_reason(self) -> str:
        return f"device {self.name!r} needs a CUDA GPU, and none is visible here"

    def label(self) -> str:
        return f"measured on {self.name} (sum of measured per-block LUT medians)"

    def error_statement(self) -> str:
        return (f"measured on this machine ({self.backend}); the error of a LUT sum against whole networks is what "
                f"`python -m latency_lut validate --device {self.name}` reports (BENCHMARKS.md)")

    def bundle_refusal(self, command: str) -> str | None:
        return (f"`{command}` is for remote devices, and {self.name!r} is a built-in device measured on this machine "
                f"(fill its LUT with `python -m latency_lut build --device {self.name}`); to time another machine, "
                "give it its own name, e.g. --device my-pi")

    def check_threads(self, threads: Any) -> int:
        threads = super().check_threads(threads)
        if self.single_thread and threads != 1:
            raise ValueError(MULTI_THREAD_REFUSAL.format(threads=threads))
        return threads

    def new_record(self, signature: dict[str, Any], *, threads: int, runs: int, warmup: int) -> LatencyRecord:
        now = _now()
        module = build_unit(signature)
        protocol = unit_protocol(self.name)
        clocks = measure_clocks(module, tuple(signature["in"]), device=self.name, threads=threads, warmup=warmup,
                                runs=runs, protocol=protocol)
        stats = clocks.latency
        overhead = call_overhead_ms(self.name, threads, protocol)
        versions = dict(backend_versions(self.name), call_overhead_ms=f"{overhead:.5f}", protocol=protocol,
                        clock=clocks.clock, wall_median_ms=f"{clocks.wall.median_ms:.5f}")
        if protocol == EVICTED:
            versions["evict_bytes"] = str(evict_bytes())
        shift = lambda v: max(v - overhead, 0.0)  # noqa: E731
        return LatencyRecord(
            device=self.name, signature_key=signature_key(signature), block_type=signature["type"],
            signature=signature, median_ms=shift(stats.median_ms), p10_ms=shift(stats.p10_ms),
            p90_ms=shift(stats.p90_ms), runs=stats.runs, source=self.source, backend=self.backend, versions=versions,
            threads=threads, created_at=now,
        )

    def unit_ms(self, table: LatencyTable, unit: Unit, rec: LatencyRecord, *, threads: int) -> float:
        if rec.threads != threads:
            try:
                self.check_threads(rec.threads)
                fix = f"pass --threads {rec.threads}, or build a LUT at {threads} thread(s) in another --db"
            except ValueError:
                fix = (f"{rec.threads} thread(s) is no longer accepted for {self.name}: build its LUT at {threads} "
                       "thread(s) in another --db")
            raise LatencyLookupError(
                f"the LUT row for {unit.block_type} {unit.key} on {self.name!r} in {table.safe_url} was measured with "
                f"{rec.threads} thread(s), not {threads}; rows are summed only at the thread count they were "
                f"measured with ({fix})")
        self._note_protocol(table, rec)
        return rec.median_ms

    def _note_protocol(self, table: LatencyTable, rec: LatencyRecord) -> None:
        """Warn once per LUT when it prices units with rows measured under an older protocol."""
        used = rec.versions.get("protocol", "batched")
        current = unit_protocol(self.name)
        if used != current and table.url not in self._warned_protocol:
            self._warned_protocol.add(table.url)
            _logger.warning("%s: LUT rows in %s measured with the %r protocol (warm caches; rows written before "
                            "protocols were recorded) are in use, while rows are now measured with %r; warm-cache "
                            "rows under-predict whole networks by ~0.05 ms per unit. A new LUT (another --db) keeps "
                            "rows consistent.", self.name, table.safe_url, used, current)

    def network_offset(self, table: LatencyTable | None, threads: int) -> float:
        """The per-call overhead timed here with the ``batched`` protocol (a network is called once)."""
        return call_overhead_ms(self.name, threads)

    def correction(self, table: LatencyTable, *, threads: int, resolution: int) -> NetworkCorrection | None:
        # a found correction stays valid (rows are never overwritten); absence is not cached: one may be stored later
        key = (table.url, int(threads), int(resolution))
        if key not in self._corrections:
            corr = table.correction(self.name, threads, resolution)
            if corr is None:
                return None
            self._corrections[key] = corr
        return self._corrections[key]

    def model_ms(self, deployed: nn.Module, input_size: tuple[int, ...], *, threads: int, runs: int) -> float:
        return measure_module(deployed, tuple(input_size), device=self.name, threads=threads, runs=runs).median_ms

    def clear_cache(self) -> None:
        self._corrections.clear()
        self._warned_protocol.clear()


def predict_module_with(model: CostModel, module: nn.Module, input_size: Sequence[int],
                        features: Callable[[nn.Module, Sequence[int]], dict[str, float]] = graph_features) -> float:
    """``model``'s prediction (ms) for the whole module ``module`` (its deployed form; the intercept included)."""
    ms = model.predict(features(module, input_size))
    if not math.isfinite(ms) or ms <= 0:
        raise CostModelError(f"cost model predicted a non-positive latency ({ms}) for {type(module).__name__}")
    return float(ms)


def unit_cost_with(model: CostModel, module: nn.Module, input_size: Sequence[int],
                   features: Callable[[nn.Module, Sequence[int]], dict[str, float]] = graph_features) -> float:
    """``model``'s price (ms) of one LUT unit: its per-op terms without the fixed intercept (added once per network).

    Because the features add up over layers, a network's units plus the intercept equal the prediction for the
    whole network, up to elementwise chains that would fuse across a unit boundary.
    """
    ms = model.predict(features(module, tuple(input_size))) - model.intercept_ms
    if not math.isfinite(ms) or ms < 0:
        raise CostModelError(f"cost model predicted a negative cost ({ms}) for {type(module).__name__}")
    return float(ms)


class CostModelSource(LatencySource):
    """A device PREDICTED by a cost model (``_costmodel.CostModel``) read from a JSON data file.

    A unit's price is the model's prediction for the unit minus its intercept; the network adds the intercept
    once. The model's ``provenance["lofo"]`` (leave-one-family-out validation) is the error quoted in the label.
    Rows record the model's version; rows of another version are re-priced with the current model in memory.

    Args:
        name, backend, description: As for every source.
        model_path: The cost model JSON (``CostModel.to_json``).
        calibrated_on: What the model was calibrated on, for the error statement
            (``"published iPhone 12 Core ML latencies"``).
        refit_hint: What to run when the JSON is missing, appended to that error.

    Subclass and override :meth:`features` for a device whose cost model reads other features.
    """

    kind = "predicted"
    source = Source.PREDICTED
    always_on_demand = True
    build_verb = "predict"

    def __init__(self, name: str, backend: str, description: str, *, model_path: str | Path,
                 calibrated_on: str = "published latencies", refit_hint: str = "") -> None:
        super().__init__(name, backend, description)
        self.model_path = Path(model_path)
        self.calibrated_on = calibrated_on
        self.refit_hint = refit_hint
        self._repriced: dict[tuple[str, str], float] = {}
        self._warned_version: set[str] = set()

    # -- the model -----------------------------------------------------------------------------------
    def cost_model(self) -> CostModel:
        """The device's cost model (read once per process and path)."""
        return load_cost_model_file(self.model_path, what=f"{self.name} cost model", hint=self.refit_hint)

    def features(self, module: nn.Module, input_size: Sequence[int]) -> dict[str, float]:
        """The features the cost model prices (default: ``graph_features`` of the deployed ONNX graph)."""
        return graph_features(module, input_size)

    def calibration_summary(self) -> dict[str, Any]:
        """The validation record shipped with the cost model (see ``_costmodel.summarize_calibration``)."""
        return summarize_calibration(self.cost_model(), device=self.name, calibrated_on=self.calibrated_on)

    def _summary_or_none(self) -> dict[str, Any] | None:
        try:
            return self.calibration_summary()
        except (OSError, KeyError, TypeError, ValueError) as e:  # CostModelError is a ValueError
            _logger.debug("no %s calibration: %s", self.name, e)
            return None

    # -- describing ----------------------------------------------------------------------------------
    def label(self) -> str:
        s = self._summary_or_none()
        try:
            if s.get("lofo_overall_median_ape_pct") is not None:
                return (f"PREDICTED for {self.name} by a cost model, not measured (leave-one-family-out median "
                        f"error {float(s['lofo_overall_median_ape_pct']):.0f}%, worst validated family "
                        f"{float(s['lofo_worst_median_ape_pct']):.0f}%)")
            return (f"PREDICTED for {self.name} by a cost model, not measured (leave-one-family-out MAPE "
                    f"{float(s['lofo_mean_mape_pct']):.1f}%)")
        except (AttributeError, KeyError, TypeError, ValueError):  # no record, or one without the figure
            return f"PREDICTED for {self.name} by a cost model, not measured (calibration error not available)"

    def error_statement(self) -> str:
        s = self._summary_or_none()
        if s is None:
            return f"{self.name} latencies are PREDICTED, not measured; no calibration record is available"
        return s["note"]

    def details(self) -> list[str]:
        s = self._summary_or_none()
        if s is None:
            return ["not calibrated in this installation: predictions for it are unavailable"]
        kind = s.get("lofo_kind", "plain")
        if s.get("lofo_overall_median_ape_pct") is not None:
            head = (f"median error {s['lofo_overall_median_ape_pct']:.1f}% over all architectures (Spearman "
                    f"{s['lofo_overall_spearman']:.3f}), worst validated family {s['lofo_worst_median_ape_pct']:.1f}%; "
                    f"mean MAPE {s['lofo_mean_mape_pct']:.1f}% over {len(s['families'])} families")
        else:
            head = (f"mean MAPE {s['lofo_mean_mape_pct']:.1f}%, max {s['lofo_max_mape_pct']:.1f}%, mean Spearman "
                    f"{s['lofo_mean_spearman']:.2f} over {len(s['families'])} families")
        lines = [f"PREDICTED, not measured. Calibration error, {kind} leave-one-family-out (fit without a family, "
                 f"predict it): {head}"]
        for row in s["families"]:
            sp = "n/a" if row.get("spearman") is None else f"{row['spearman']:.2f}"
            med = "" if row.get("median_ape_pct") is None else (f"median {row['median_ape_pct']:5.1f}%  bias "
                                                                f"{row['bias_pct']:+6.1f}%  ")
            lines.append(f" {row['family']:18s} {med}MAPE {row['mape_pct']:5.1f}%  Spearman {sp}  "
                         f"({row['n_models']} models)")
        return lines

    def figure_error(self, module: nn.Module, input_size: Sequence[int]) -> str | None:
        """The error of the calibration family ``module`` resembles (see ``latency_lut._calibration``), or
        the worst family's when it resembles none; ``None`` without a validation record."""
        from ._calibration import GOALS, resemblance

        s = self._summary_or_none()
        model = self.cost_model()
        profiles = model.provenance.get("family_profiles") or {}
        rows = {f["family"]: f for f in (s or {}).get("families", []) if f.get("median_ape_pct") is not None}
        if not rows or not profiles:
            return None
        family, _ = resemblance(self.features(module, input_size), profiles)
        validated = [f for f in rows.values() if f["n_models"] >= GOALS["min_models"]] or list(rows.values())
        worst = max(validated, key=lambda f: f["median_ape_pct"])
        worst_text = f"worst validated family error +-{worst['median_ape_pct']:.0f}% ({worst['family']})"
        if family is None or family not in rows:
            return f"resembles no calibration family: {worst_text}"
        f = rows[family]
        if f["n_models"] < GOALS["min_models"]:
            return f"like {family} ({f['n_models']} calibration model(s), too few to validate): {worst_text}"
        goal = "" if f.get("meets_goal") else f", outside the {GOALS['median_ape_pct']:.0f}% goal"
        return (f"like {family}: +-{f['median_ape_pct']:.0f}% median error, bias {f['bias_pct']:+.0f}% "
                f"({f['n_models']} models{goal})")

    def bundle_refusal(self, command: str) -> str | None:
        return (f"`{command}` is for remote devices, and {self.name!r} is a built-in device PREDICTED by its "
                f"calibrated cost model; to time a real device, give it its own name, e.g. --device my-{self.name}")

    # -- pricing -------------------------------------------------------------------------------------
    def new_record(self, signature: dict[str, Any], *, threads: int, runs: int, warmup: int) -> LatencyRecord:
        now = _now()
        model = self.cost_model()
        ms = unit_cost_with(model, build_unit(signature), tuple(signature["in"]), self.features)
        return LatencyRecord(
            device=self.name, signature_key=signature_key(signature), block_type=signature["type"],
            signature=signature, median_ms=ms, p10_ms=ms, p90_ms=ms, runs=0, source=self.source,
            backend=self.backend, versions={"cost_model": model.version}, threads=0, created_at=now,
        )

    def unit_ms(self, table: LatencyTable, unit: Unit, rec: LatencyRecord, *, threads: int) -> float:
        """A row made by another cost-model version is re-priced with the current one (in memory only: stored
        rows are never overwritten), with a warning once per LUT."""
        model = self.cost_model()
        if rec.versions.get("cost_model") == model.version:
            return rec.median_ms
        key = (table.url, unit.key)
        if key not in self._repriced:
            if table.url not in self._warned_version:
                self._warned_version.add(table.url)
                _logger.warning("%s: %s rows in %s were predicted by another cost model version (%s); they are "
                                "re-priced with the current one (%s) in memory. Use a new --db to store current "
                                "predictions.", self.name, self.name, table.safe_url, rec.versions.get("cost_model"),
                                model.version)
            self._repriced[key] = unit_cost_with(model, build_unit(unit.signature), unit.input_shape, self.features)
        return self._repriced[key]

    def network_offset(self, table: LatencyTable | None, threads: int) -> float:
        """The cost model's intercept (unit prices exclude it)."""
        return self.cost_model().intercept_ms

    def model_ms(self, deployed: nn.Module, input_size: tuple[int, ...], *, threads: int, runs: int) -> float:
        return predict_module_with(self.cost_model(), deployed, tuple(input_size), self.features)

    def clear_cache(self) -> None:
        self._repriced.clear()
        self._warned_version.clear()


class RemoteSource(LatencySource):
    """A device this machine cannot reach: rows are timed there by the bundle runner and imported (``_bundle``)."""

    kind = "remote"
    source = Source.IMPORTED

    def __init__(self, name: str, backend: str = "onnxruntime-remote", description: str | None = None) -> None:
        super().__init__(name, backend, description or f"remote device {name!r} (bundle/import)")
        #: LUT url -> (number of rows when computed, median call overhead of its imported rows)
        self._overhead: dict[str, tuple[int, float]] = {}

    def label(self) -> str:
        return f"measured on remote device {self.name} (imported per-block LUT)"

    def error_statement(self) -> str:
        return (f"measured on {self.name} itself by the bundle runner and imported; the LUT sum has not been "
                "validated against whole networks on that device")

    def check_known(self, table: LatencyTable) -> None:
        if not table.keys(self.name):
            raise UnknownDeviceError(f"unknown device {self.name!r}: not a built-in device, and {table.safe_url} has "
                                     "no rows for it (a remote device gets rows through `bundle` and `import`)")

    def _no_row(self, signature: dict[str, Any]) -> LatencyLookupError:
        return LatencyLookupError(
            f"no LUT entry for {signature['type']} {signature_key(signature)} on remote device {self.name!r}; write a "
            f"bundle (python -m latency_lut bundle --device {self.name} --out DIR), run it there, and import the "
            "results")

    def missing_row_error(self, table: LatencyTable, unit: Unit) -> LatencyLookupError:
        return self._no_row(unit.signature)

    def new_record(self, signature: dict[str, Any], *, threads: int, runs: int, warmup: int) -> LatencyRecord:
        raise self._no_row(signature)  # a remote device cannot be timed from here

    def network_offset(self, table: LatencyTable | None, threads: int) -> float:
        """The median per-call overhead recorded by the imported rows (0 if none recorded it).

        Rows are never overwritten or deleted, so the cached value stays valid while the row count is unchanged.
        """
        if table is None:
            return 0.0
        n_rows = len(table.keys(self.name))
        cached = self._overhead.get(table.url)
        if cached is not None and cached[0] == n_rows:
            return cached[1]
        values = []
        for rec in table.records(self.name):
            try:
                values.append(float(rec.versions["call_overhead_ms"]))
            except (KeyError, TypeError, ValueError):
                continue
        ms = float(np.median(values)) if values else 0.0
        self._overhead[table.url] = (n_rows, ms)
        return ms

    def clear_cache(self) -> None:
        self._overhead.clear()
