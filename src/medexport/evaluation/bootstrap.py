"""Case-resampling bootstrap, vectorised as weight matrices so 1000 resamples cost a few matmuls.

A resample of N cases with replacement is a row of counts ``w`` (how often each case was drawn,
summing to N). A statistic written as a function of such weights, ``stat(W) -> (B, M)``, is then
evaluated for all resamples at once, and for the original data with ``W = ones((1, N))``.

Example::

    correct = (pred == labels).astype(float)
    value, se = bootstrap(lambda w: (w @ correct[:, None]) / w.sum(1, keepdims=True), len(correct))
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterator

import numpy as np

from medexport.errors import InputError

Statistic = Callable[[np.ndarray], np.ndarray]   # (B, N) case weights -> (B, M) statistics

_CHUNK_ELEMENTS = 1 << 22   # weights per chunk (32 MiB of float64): bounds memory for large N


def resample_weights(n: int, n_boot: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield (b, n) float64 count matrices, one row per resample of ``n`` cases with replacement."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def bootstrap(stat: Statistic, n: int, *, n_boot: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (value, se), each (M,): ``stat`` on the data and the std (ddof=1) over resamples.

    Resamples where a statistic is undefined (NaN, e.g. a class absent from the resample) are
    skipped for that statistic; the SE is NaN if fewer than two resamples define it or n_boot == 0.
    """
    if n < 1:
        raise InputError(f"bootstrap needs at least 1 case, got {n}")
    if n_boot < 0:
        raise InputError(f"n_boot must be >= 0, got {n_boot}")
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.asarray(stat(np.ones((1, n))), dtype=np.float64)[0]
        if n_boot == 0:
            return value, np.full_like(value, np.nan)
        draws = np.concatenate([np.asarray(stat(w), dtype=np.float64)
                                for w in resample_weights(n, n_boot, seed)], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns -> NaN SE, by design
        se = np.nanstd(draws, axis=0, ddof=1)
    se[np.sum(~np.isnan(draws), axis=0) < 2] = np.nan
    return value, se
