"""Latency of a runner: warm-up, then timed single calls; median, p90, p99 and throughput.

Each timed call runs the full ``runner.infer`` (input checks included), as an application would.
The harness repeats until both ``iterations`` calls and ``min_seconds`` have passed, so fast models
get enough samples on a noisy shared machine; ``max_seconds`` caps a slow model (3D) once ``min_iterations``
calls ran, warm-up included, and the result says how many calls it got. :func:`interleaved_medians` times several variants side
by side, for ratios that hold on a shared machine.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Hashable, Mapping, TypeVar

import numpy as np

from medexport.errors import InputError

Key = TypeVar("Key", bound=Hashable)


@dataclass
class LatencyResult:
    """Latency statistics in milliseconds for one batch size."""

    batch: int
    iterations: int
    warmup: int  # warm-up calls made (fewer than asked when max_seconds cut them short)
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
                    iterations: int = 50, min_seconds: float = 1.0, max_seconds: float = 60.0,
                    min_iterations: int = 1) -> LatencyResult:
    """Time ``infer(batch)``; stops after ``iterations`` calls once ``min_seconds`` passed, or at ``max_seconds``
    (counted from the first warm-up call; a quarter of it at most goes to warm-up) once ``min_iterations`` ran."""
    start = time.perf_counter()
    warmed = 0
    while warmed < warmup and (warmed == 0 or time.perf_counter() - start < max_seconds / 4):
        infer(batch)
        warmed += 1
    times: list[float] = []
    timed_from = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        infer(batch)
        times.append(time.perf_counter() - t0)
        now = time.perf_counter()
        if ((len(times) >= iterations and now - timed_from >= min_seconds)
                or (now - start >= max_seconds and len(times) >= min_iterations)):
            break
    ms = np.asarray(times) * 1e3
    median = float(np.median(ms))
    return LatencyResult(
        batch=int(batch.shape[0]),
        iterations=len(times),
        warmup=warmed,
        median_ms=median,
        mean_ms=float(ms.mean()),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        min_ms=float(ms.min()),
        std_ms=float(ms.std()),
        throughput_per_s=batch.shape[0] * 1e3 / median,
    )


def interleaved_medians(infers: Mapping[Key, Callable[[np.ndarray], np.ndarray]], batch: np.ndarray, *,
                        rounds: int, **measure) -> dict[Key, float]:
    """Median over ``rounds`` of each variant's median latency (ms): the variants are timed in alternation in
    one run, every other round in reverse order, so machine noise hits them alike and no variant always runs
    after the same one. ``measure``: keywords of :func:`measure_latency` (warmup, iterations, min_seconds).

    Example::

        ms = interleaved_medians({"fp32": fp32.infer, "int8": int8.infer}, batch, rounds=5, min_seconds=0.5)
        speedup = ms["fp32"] / ms["int8"]
    """
    return {key: statistics.median(r.median_ms for r in results)
            for key, results in interleaved_rounds(infers, batch, rounds=rounds, **measure).items()}


def interleaved_rounds(infers: Mapping[Key, Callable[[np.ndarray], np.ndarray]], batch: np.ndarray, *,
                       rounds: int, before: Callable[[Key, int], None] | None = None,
                       **measure) -> dict[Key, list[LatencyResult]]:
    """Every variant's :class:`LatencyResult` per round, timed in alternation as :func:`interleaved_medians` says.
    ``before(key, round_no)`` is called before each measurement (progress display; never inside the timed calls)."""
    if rounds < 1:
        raise InputError(f"rounds must be at least 1, got {rounds}")
    per_round: dict[Key, list[LatencyResult]] = {key: [] for key in infers}
    order = list(infers.items())
    for round_no in range(rounds):
        for key, infer in order if round_no % 2 == 0 else order[::-1]:
            if before is not None:
                before(key, round_no)
            per_round[key].append(measure_latency(infer, batch, **measure))
    return per_round
