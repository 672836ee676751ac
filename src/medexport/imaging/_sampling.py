"""Deterministic stratified sampling: every source contributes, picks spread over each volume.

Calibration ranges come from the extremes of the intensity distribution, so taking all slices from
a few scans (or only mid-volume slices) under-covers them; spreading over sources and slices does not.
"""
from __future__ import annotations

import numpy as np


def spread(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices out of ``range(n)``, evenly spaced with a seeded phase; all of them if k >= n."""
    if k is None or k >= n:
        return np.arange(n)
    if k <= 0:
        return np.arange(0)
    phase = rng.random()
    return np.floor((np.arange(k) + phase) * n / k).astype(int)


def plan(n_units: int, max_samples: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Order to visit sources and each source's quota.

    - No cap: natural order, no quotas.
    - Cap below the number of sources: a seeded random order, one image each, stop when full.
    - Otherwise: equal shares, the remainder to seeded sources.
    Shortfalls (small or unreadable sources) are made up afterwards by :func:`top_up`.
    """
    if max_samples is None:
        return np.arange(n_units), None
    order = rng.permutation(n_units)
    if max_samples < n_units:
        return order, np.ones(n_units, dtype=int)
    quota = np.full(n_units, max_samples // n_units, dtype=int)
    quota[order[: max_samples % n_units]] += 1
    return order, quota


def top_up(deficit: int, spare: dict[int, int]) -> dict[int, int]:
    """Share ``deficit`` extra images over sources with ``spare`` ones, as evenly as their spares allow."""
    extra: dict[int, int] = {}
    ranked = sorted(spare, key=lambda u: (spare[u], u))  # smallest spare first: what it cannot take flows on
    for i, u in enumerate(ranked):
        share = min(spare[u], -(-deficit // (len(ranked) - i)))
        if share > 0:
            extra[u] = share
            deficit -= share
    return extra
