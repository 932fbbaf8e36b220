"""Pricing candidates on the search device: the latency label, the device check, the cheapest genome."""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from ._config import SearchConfig

_logger = logging.getLogger(__name__)

__all__ = ["check_device", "latency_error", "latency_label", "latency_source", "min_reachable_latency", "space"]


def latency_label(device: str) -> str:
    """How latencies of ``device`` are labelled everywhere: measured, imported or PREDICTED with its error."""
    from latency_lut import latency_label as label

    return label(device)


def latency_error(device: str, genome: dict[str, Any], resolution: int) -> str | None:
    """How far to trust ``device``'s latency of one genome beyond its label (for a predicted device: the error
    of the calibration family the network resembles); ``None`` where the label says it all (measured), or
    where it cannot be said (logged)."""
    return _latency_error(device, json.dumps(genome, sort_keys=True), int(resolution))


@functools.lru_cache(maxsize=256)
def _latency_error(device: str, genome_json: str, resolution: int) -> str | None:
    from latency_lut import get_device
    from search_space import RepNASError, build_model

    try:
        model = build_model(json.loads(genome_json), num_classes=10).eval()
        return get_device(device, allow_remote=True).figure_error(model, (3, resolution, resolution))
    except RepNASError as e:  # the figure keeps its label; only the per-network statement is missing
        _logger.warning("no per-network latency error for %s at %d px: %s", device, resolution, e)
        return None


def latency_source(device: str) -> str:
    """``measured``, ``predicted`` or ``imported``: the source recorded with each latency of ``device``."""
    from latency_lut import source_word

    return source_word(device)


def check_device(config: SearchConfig):
    """The device's latency source and the LUT; a device the LUT cannot price at all is refused here."""
    from latency_lut import LatencyTable, get_device

    dev = get_device(config.device, allow_remote=True)
    table = LatencyTable(config.lut_db)
    dev.check_known(table)
    return dev, table


def space(config: SearchConfig):
    from search_space import SearchSpace

    return SearchSpace(resolution=config.resolution)


def min_reachable_latency(config: SearchConfig, table=None, *, passes: int = 3) -> tuple[float, Any]:
    """The cheapest genome of the space on ``config.device`` found by coordinate descent from the smallest one.

    Depth is held at each stage's minimum; every categorical gene is tried in turn, keeping the cheapest,
    until a pass changes nothing. Returns ``(latency_ms, genome)``.
    """
    from latency_lut import predict_latency

    space_ = space(config)
    choices: dict[str, tuple] = {}
    chosen: dict[str, Any] = {}

    def draw():
        def cat(name, options):
            choices[name] = tuple(options)
            v = chosen.get(name, options[0])
            return v if v in options else options[0]

        return space_.draw(cat, lambda name, lo, hi: lo)

    def price(g) -> float:
        return predict_latency(g, config.device, config.resolution, db=table)

    best_g = draw()
    best = price(best_g)
    for _ in range(passes):
        improved = False
        for name in list(choices):
            for v in choices.get(name, ()):
                if chosen.get(name, choices[name][0]) == v:
                    continue
                old = chosen.get(name)
                chosen[name] = v
                g = draw()
                ms = price(g)
                if ms < best - 1e-12:
                    best, best_g, improved = ms, g, True
                elif old is None:
                    chosen.pop(name)
                else:
                    chosen[name] = old
        if not improved:
            break
    return best, best_g
