"""Latency of a runner: warm-up until stable, then timed single calls; percentiles, spread and throughput.

Each timed call runs the full ``runner.infer`` (input checks included), as an application would.

Warm-up: a fixed count (``warmup=10``), or a :class:`WarmupRule` (``warmup=WarmupRule()``): calls continue
until the last two windows of ``window`` calls each have a coefficient of variation (std/mean) of at most
``cv`` and medians within ``cv`` of each other, or a cap is hit; the result records the rule, how many calls
it took, the CV reached and whether the rule was met.
Then the harness repeats until both ``iterations`` calls and ``min_seconds`` have passed, so fast models get
enough samples on a noisy shared machine; ``max_seconds`` caps a slow model (3D) once ``min_iterations`` calls
ran, warm-up included (a quarter of it at most goes to warm-up). A timed CV above :data:`HIGH_CV` adds a
warning to the result. :func:`interleaved_medians` times several variants side by side, for ratios that hold
on a shared machine.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Hashable, Mapping, TypeVar

import numpy as np

from medexport.errors import InputError

Key = TypeVar("Key", bound=Hashable)

# above this coefficient of variation of the timed calls, the result carries a warning: the median is still
# reported, but one run's number may differ from the next by more than the difference being looked for
HIGH_CV = 0.10


@dataclass(frozen=True)
class WarmupRule:
    """Warm up until latency is stable: the last two windows of ``window`` calls each have a CV of at most
    ``cv`` and their medians differ by at most ``cv``; ``max_calls`` calls at most.

    ``WarmupRule()`` (the `medexport bench` default): windows of 10 calls, 5%, 200 calls at most. The first
    calls of a runtime allocate, JIT-compile and fill caches; a fixed count is too short for a 3D model on a
    busy CPU and wasteful for a small 2D one. Two windows, not one: a run of equally slow cold calls has a low
    CV too, and a latency still drifting down passes one window's CV test but not the medians' comparison.
    """

    window: int = 10
    cv: float = 0.05
    max_calls: int = 200

    def __post_init__(self) -> None:
        if self.window < 2 or self.max_calls < 2 * self.window or not 0 < self.cv < 1:
            raise InputError(f"warm-up rule needs window >= 2, max_calls >= 2 x window and 0 < cv < 1, got {self}")

    def describe(self) -> str:
        return (f"until the last 2 windows of {self.window} calls each have CV <= {self.cv:.0%} and medians within "
                f"{self.cv:.0%} (at most {self.max_calls} calls or a quarter of the time budget)")

    def settled(self, times: list[float]) -> bool:
        """Whether ``times`` (the warm-up latencies so far) meet the rule."""
        if len(times) < 2 * self.window:
            return False
        last, before = times[-self.window:], times[-2 * self.window:-self.window]
        if _cv(last) > self.cv or _cv(before) > self.cv:
            return False
        return abs(float(np.median(last)) - float(np.median(before))) <= self.cv * float(np.median(before))


@dataclass
class LatencyResult:
    """Latency statistics in milliseconds for one batch size.

    ``samples_ms``: every timed call, kept for distribution plots; :meth:`to_dict` leaves it out unless asked.
    ``first_call_ms``: the very first (cold) call. ``warmup_cv``/``warmup_stable``: the CV of the last
    warm-up window and whether the rule's CV was reached (``None`` with a fixed warm-up count).
    """

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
    p95_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    cv: float = 0.0
    first_call_ms: float | None = None
    warmup_rule: str = ""
    warmup_cv: float | None = None
    warmup_stable: bool | None = None
    warning: str | None = None
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, samples: bool = False) -> dict:
        out = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items() if k != "samples_ms"}
        if samples:
            out["samples_ms"] = [round(v, 4) for v in self.samples_ms]
        return out


def latency_stats(ms: np.ndarray) -> dict[str, float]:
    """min, median, mean, p90, p95, p99, p99.9, max, std and CV of latencies in ms (p99.9 of fewer than 1000
    samples is an interpolation towards the max, not an observed tail)."""
    ms = np.asarray(ms, dtype=np.float64)
    mean = float(ms.mean())
    return {"min_ms": float(ms.min()), "median_ms": float(np.median(ms)), "mean_ms": mean,
            "p90_ms": float(np.percentile(ms, 90)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "p999_ms": float(np.percentile(ms, 99.9)),
            "max_ms": float(ms.max()), "std_ms": float(ms.std()), "cv": float(ms.std() / mean) if mean > 0 else 0.0}


def cv_warning(cv: float, what: str = "latency") -> str | None:
    """The warning a result carries when its CV stays above :data:`HIGH_CV`."""
    if cv <= HIGH_CV:
        return None
    return (f"{what} varied by {cv:.0%} (CV) across the timed calls, above {HIGH_CV:.0%}: the machine is busy or "
            "the clocks change; compare medians of interleaved runs")


def warm_up(infer: Callable[[np.ndarray], object], batch: np.ndarray, warmup: int | WarmupRule,
            deadline: float) -> tuple[list[float], float | None, bool | None]:
    """Run the warm-up calls; returns their latencies (s), the CV of the last window and whether it was stable.
    At most one call runs past ``deadline`` (a perf_counter time): the first, which is never skipped."""
    times: list[float] = []
    rule = warmup if isinstance(warmup, WarmupRule) else None
    limit = rule.max_calls if rule else warmup
    while len(times) < limit and (not times or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        infer(batch)
        times.append(time.perf_counter() - t0)
        if rule and rule.settled(times):
            return times, _cv(times[-rule.window:]), True
    if rule is None:
        return times, None, None
    last = times[-rule.window:]
    return times, (_cv(last) if len(last) >= 2 else None), False


def _cv(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return float(np.std(values) / mean) if mean > 0 else 0.0


def measure_latency(infer: Callable[[np.ndarray], object], batch: np.ndarray, *, warmup: int | WarmupRule = 10,
                    iterations: int = 50, min_seconds: float = 1.0, max_seconds: float = 60.0,
                    min_iterations: int = 1) -> LatencyResult:
    """Time ``infer(batch)``; stops after ``iterations`` calls once ``min_seconds`` passed, or at ``max_seconds``
    (counted from the first warm-up call; a quarter of it at most goes to warm-up) once ``min_iterations`` ran."""
    start = time.perf_counter()
    warm, warm_cv, stable = warm_up(infer, batch, warmup, start + max_seconds / 4)
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
    stats = latency_stats(ms)
    warnings = [cv_warning(stats["cv"])]
    if stable is False:
        warnings.append(f"warm-up did not settle ({warmup.describe()}; last CV {warm_cv:.0%})"
                        if warm_cv is not None else "warm-up was cut short by the time budget")
    return LatencyResult(
        batch=int(batch.shape[0]), iterations=len(times), warmup=len(warm),
        throughput_per_s=batch.shape[0] * 1e3 / stats["median_ms"], **stats,
        first_call_ms=warm[0] * 1e3 if warm else None,
        warmup_rule=warmup.describe() if isinstance(warmup, WarmupRule) else f"fixed: {warmup} calls",
        warmup_cv=warm_cv, warmup_stable=stable,
        warning="; ".join(w for w in warnings if w) or None, samples_ms=ms.tolist())


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
