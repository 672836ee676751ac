"""Latency of a runner: warm-up, then timed single calls; median, p90, p99 and throughput.

Each timed call runs the full ``runner.infer`` (input checks included), as an application would.
The harness repeats until both ``iterations`` calls and ``min_seconds`` have passed, so fast models
get enough samples on a noisy shared machine.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass
class LatencyResult:
    """Latency statistics in milliseconds for one batch size."""

    batch: int
    iterations: int
    warmup: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    std_ms: float
    throughput_per_s: float  # images per second at the median latency

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def measure_latency(infer: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, *, warmup: int = 10,
                    iterations: int = 50, min_seconds: float = 1.0, max_seconds: float = 60.0) -> LatencyResult:
    """Time ``infer(batch)``; stops after ``iterations`` calls once ``min_seconds`` passed, or at ``max_seconds``."""
    for _ in range(warmup):
        infer(batch)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        infer(batch)
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= iterations and elapsed >= min_seconds) or elapsed >= max_seconds:
            break
    ms = np.asarray(times) * 1e3
    median = float(np.median(ms))
    return LatencyResult(
        batch=int(batch.shape[0]),
        iterations=len(times),
        warmup=warmup,
        median_ms=median,
        mean_ms=float(ms.mean()),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        min_ms=float(ms.min()),
        std_ms=float(ms.std()),
        throughput_per_s=batch.shape[0] * 1e3 / median,
    )
