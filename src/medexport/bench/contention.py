"""Contention: N client processes run one artifact at once, as on a shared radiology workstation.

Each client is its own process (its own runtime, threads and memory, as separate applications are): it opens
the artifact, warms up by the :class:`~medexport.bench.latency.WarmupRule`, waits at a barrier so that all
clients start together, then calls ``infer`` for ``seconds``. The result has each client's percentiles, the
pooled percentiles of all calls, and the combined throughput. ``background_load`` starts that many busy-loop
processes for the timed part (the PACS viewer and reporting tool next to the model).

Example::

    result = run_clients(Path("model.onnx"), "onnxruntime", clients=2, batch=data, threads=1, seconds=3)
    result["pooled"]["p99_ms"], [c["p99_ms"] for c in result["clients"]]
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import time
from pathlib import Path

import numpy as np

from medexport.bench.latency import WarmupRule, latency_stats, warm_up
from medexport.errors import BackendUnavailableError, InputError

_START_TIMEOUT_S = 300   # a client that has not opened and warmed up its artifact by then has failed


def run_clients(path: Path, target: str, *, clients: int, batch: np.ndarray, seconds: float,
                device: str | None = None, threads: int | None = None, warmup: WarmupRule = WarmupRule(),
                background_load: int = 0, options: dict | None = None) -> dict:
    """Run ``clients`` concurrent client processes on ``path`` for ``seconds``; per-client and pooled stats."""
    if clients < 1 or background_load < 0 or seconds <= 0:
        raise InputError(f"contention needs clients >= 1, background load >= 0 and seconds > 0, got "
                         f"{clients}, {background_load}, {seconds}")
    ctx = mp.get_context("spawn")   # fresh processes: no runtime thread pools inherited through fork
    barrier, results, stop = ctx.Barrier(clients + 1), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_client, args=(i, str(path), target, device, threads, options or {}, batch,
                                               warmup, seconds, barrier, results), daemon=True)
             for i in range(clients)]
    hogs = [ctx.Process(target=_busy, args=(stop,), daemon=True) for _ in range(background_load)]
    try:
        for p in procs + hogs:
            p.start()
        try:
            barrier.wait(timeout=_START_TIMEOUT_S)
        except Exception:   # threading.BrokenBarrierError: a client failed or timed out before the start
            raise BackendUnavailableError(f"a contention client could not start: {_first_error(results)}") from None
        wall = time.perf_counter()
        per_client = [_get(results, seconds) for _ in procs]
        wall = time.perf_counter() - wall
    finally:
        stop.set()
        for p in procs + hogs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    errors = [r["error"] for r in per_client if "error" in r]
    if errors:
        raise BackendUnavailableError(f"a contention client failed: {errors[0]}")
    per_client.sort(key=lambda r: r["client"])
    pooled = np.concatenate([r.pop("samples_ms") for r in per_client])
    images = int(batch.shape[0]) * len(pooled)
    return {"clients": [{"client": r["client"], "calls": r["calls"], "warmup": r["warmup"],
                         "warmup_stable": r["warmup_stable"], "peak_rss_mib": r["peak_rss_mib"],
                         **_rounded(r["stats"])} for r in per_client],
            "pooled": {"calls": int(len(pooled)), **_rounded(latency_stats(pooled))},
            "n_clients": clients, "background_load": background_load, "seconds": seconds,
            "throughput_per_s": round(images / max(r["elapsed_s"] for r in per_client), 2),
            "wall_s": round(wall, 2)}


def _client(index: int, path: str, target: str, device: str | None, threads: int | None, options: dict,
            batch: np.ndarray, warmup: WarmupRule, seconds: float, barrier, results) -> None:
    """One client process: open, warm up, wait for the others, time calls for ``seconds``, report."""
    try:
        from medexport.bench.memory import peak_rss_mib
        from medexport.runtimes import open_runner

        with open_runner(path, target, device=device, threads=threads, **options) as runner:
            warm, _, stable = warm_up(runner.infer, batch, warmup, time.perf_counter() + seconds)
            barrier.wait(timeout=_START_TIMEOUT_S)
            times: list[float] = []
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                runner.infer(batch)
                times.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
        ms = np.asarray(times) * 1e3
        results.put({"client": index, "calls": len(times), "warmup": len(warm), "warmup_stable": stable,
                     "elapsed_s": elapsed, "stats": latency_stats(ms), "samples_ms": ms,
                     "peak_rss_mib": round(peak_rss_mib(), 1)})
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it as one error
        barrier.abort()
        results.put({"client": index, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})


def _busy(stop) -> None:
    """A background process that keeps one core busy until ``stop`` is set."""
    while not stop.is_set():
        sum(range(10_000))


def _get(results, seconds: float) -> dict:
    try:
        return results.get(timeout=seconds + _START_TIMEOUT_S)
    except queue.Empty:
        return {"client": -1, "error": "a client sent no result"}


def _first_error(results) -> str:
    try:
        return results.get(timeout=5).get("error", "unknown")
    except queue.Empty:
        return "no client reported before the start timeout"


def _rounded(stats: dict) -> dict:
    return {k: round(v, 4) for k, v in stats.items()}
