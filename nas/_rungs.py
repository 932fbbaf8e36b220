"""Multi-objective successive halving: which evaluations of a rung are promoted to the next.

Promotion is asynchronous (ASHA's rule, with the ordering of MO-ASHA): whenever an evaluation at rung ``r``
finishes, the feasible evaluations of that rung are ordered by non-dominated rank on (score up: the proxy
accuracy or minus its validation loss; latency down), ties broken by crowding distance (larger first, as
NSGA-II does), and the first ``floor(n / eta)`` of the ``n`` are promoted to rung ``r + 1`` unless they
already were. Latency-budget violators are never
promoted (nor counted in ``n``). A candidate promoted early may later fall out of the top 1/eta as more
evaluations arrive; it keeps its promotion (ASHA's trade: no worker waits for a rung to fill).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["crowding_distance", "nondominated_ranks", "promotion_order", "to_promote"]


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` scores at least as high and is as fast as ``b`` and is strictly better in one (score, latency)."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def nondominated_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting: rank 0 for the front, 1 for the front of the rest, ... (one per point)."""
    n = len(points)
    dominated_by = [0] * n
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if _dominates(points[i], points[j]):
                dominates[i].append(j)
                dominated_by[j] += 1
            elif _dominates(points[j], points[i]):
                dominates[j].append(i)
                dominated_by[i] += 1
    ranks = [0] * n
    current = [i for i in range(n) if dominated_by[i] == 0]
    rank = 0
    while current:
        nxt = []
        for i in current:
            ranks[i] = rank
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        current, rank = nxt, rank + 1
    return ranks


def crowding_distance(points: Sequence[tuple[float, float]]) -> list[float]:
    """NSGA-II's crowding distance within one front: infinite at each objective's extremes, else the sum over
    objectives of the normalized gap between the two neighbours."""
    n = len(points)
    dist = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(2):
        order = sorted(range(n), key=lambda i: points[i][m])
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, n - 1):
            dist[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (hi - lo)
    return dist


def promotion_order(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of ``points`` best first: by non-dominated rank, then larger crowding distance, then index."""
    ranks = nondominated_ranks(points)
    crowd = [0.0] * len(points)
    for r in set(ranks):
        members = [i for i in range(len(points)) if ranks[i] == r]
        for i, d in zip(members, crowding_distance([points[i] for i in members])):
            crowd[i] = d
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowd[i], i))


def to_promote(points: Sequence[tuple[float, float]], eta: int) -> list[int]:
    """Indices of the (feasible) ``points`` of one rung that belong to its top ``floor(len / eta)``."""
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")
    return promotion_order(points)[: len(points) // eta]
