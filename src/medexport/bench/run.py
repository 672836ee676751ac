"""Benchmark a built artifact: compute-only latency per batch size (a batch sweep), OpenVINO's async
throughput, end-to-end latency on an image file, contention between client processes, memory, environment.

Every result keeps the keys other code reads (``latency[i]["median_ms"]``, ``devices``, ``environment``) and adds
what it was measured with: the warm-up rule, threads and CPU affinity, the runtime's settings, peak memory.
``median_ms`` is the wall-clock time of the call an application makes; where the runtime times its own calls
(OpenVINO), ``runtime_median_ms`` is that timing of the same calls (what benchmark_app reports).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medexport.bench.latency import WarmupRule
from medexport.errors import InputError
from medexport.runtimes import open_runner, resolve_target, target_for


def bench_artifact(path: Path, *, target: str | None, device: str | None, batches: list[int],
                   input_shape: str | None, iterations: int, warmup: int | WarmupRule, threads: int | None,
                   min_seconds: float = 1.0, max_seconds: float = 60.0, mode: str | None = None,
                   streams: int | None = None, nireq: int | None = None, clients: list[int] | None = None,
                   client_seconds: float = 5.0, background_load: int = 0, e2e_input: Path | None = None,
                   e2e_size: tuple[int, ...] | None = None, e2e_task: str = "segmentation",
                   e2e_repeats: int = 5) -> dict:
    """Latency per batch size plus the environment it was measured in, and what else was asked.

    ``warmup``: a count or a :class:`WarmupRule`; ``min_seconds``/``max_seconds``: the time budget per batch
    size (see :func:`~medexport.bench.latency.measure_latency`). ``mode``/``streams``/``nireq``: OpenVINO's
    performance hint, CPU streams and requests in flight; in throughput mode each batch size also gets an async
    run of ``min_seconds`` (``throughput`` key). ``clients``: client counts for :func:`run_clients`
    (``contention`` key), ``client_seconds`` each. ``e2e_input``: an image file or DICOM folder timed end to
    end (``end_to_end`` key), preprocessed to ``e2e_size`` (default: the artifact's input; larger volumes are
    tiled with the artifact's input as the sliding window).
    """
    from medexport.bench import busy_warning, environment, measure_latency
    from medexport.bench.environment import gpu_memory_used_mib
    from medexport.bench.memory import peak_rss_mib, rss_mib
    from medexport.loading import parse_shape
    from medexport.zoo.samples import real_inputs

    target = resolve_target(target) if target else target_for(path)
    options = _runner_options(target, mode, streams, nireq)
    warning = busy_warning()
    rss_before = rss_mib()
    with open_runner(path, target, device=device, threads=threads, **options) as runner:
        rss_loaded = rss_mib()
        dims = runner.input_shape
        if input_shape:
            given = parse_shape(input_shape)
            if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims[1:], given[1:])):
                raise InputError(f"--input-shape {input_shape} does not match the artifact's input {dims}")
            dims = [None, *given[1:]]
        if any(d is None for d in dims[1:]):
            raise InputError(f"{path.name} has dynamic dimensions besides the batch ({dims}); pass --input-shape")
        results, throughput = [], []
        for batch in batches:
            if dims[0] is not None and dims[0] != batch:
                raise InputError(f"{path.name} has a fixed batch of {dims[0]}; cannot run batch {batch}")
            data = real_inputs((batch, *dims[1:]), batch)
            infer, internal = _with_runtime_timer(runner)
            results.append(measure_latency(infer, data, warmup=warmup, iterations=iterations,
                                           min_seconds=min_seconds, max_seconds=max_seconds).to_dict(samples=True))
            if internal:
                timed = internal[-results[-1]["iterations"]:]   # the timed calls come after the warm-up
                results[-1]["runtime_median_ms"] = round(float(np.median(timed)), 4)
            if options.get("mode") == "throughput":
                throughput.append(_async_throughput(runner, data, min_seconds))
        end_to_end = _end_to_end(runner, e2e_input, dims, e2e_size, e2e_task, e2e_repeats) if e2e_input else None
        devices, runtime = runner.devices(), runner.describe()
        gpu_mib = runner.peak_gpu_memory_mib() if hasattr(runner, "peak_gpu_memory_mib") else None
        gpu_used = gpu_memory_used_mib() if device and "cuda" in device.lower() else None   # runtime still open
    result = {"artifact": path.name, "target": target, "devices": devices, "threads": threads,
              "latency": results, "warning": _warnings(warning, results), "environment": environment(),
              "runtime": runtime, "warmup_rule": results[0]["warmup_rule"] if results else None,
              "compute_only": "runner.infer on one in-memory batch (input checks included, no file reading)",
              "memory": _memory(rss_before, rss_loaded, peak_rss_mib(), gpu_mib, gpu_used)}
    if throughput:
        result["throughput"] = throughput
    if end_to_end:
        result["end_to_end"] = end_to_end
    if clients:
        result["contention"] = _contention(path, target, clients, dims, batches[0], device, threads, warmup,
                                           client_seconds, background_load, options)
    return result


def _with_runtime_timer(runner) -> tuple:
    """``runner.infer``, and where the runtime times its own calls (OpenVINO), a wrapper that collects those
    timings too: the same calls seen from inside the runtime, as OpenVINO's benchmark_app reports them."""
    if not hasattr(runner, "last_latency_ms"):
        return runner.infer, []
    internal: list[float] = []

    def infer(batch):
        out = runner.infer(batch)
        internal.append(runner.last_latency_ms())
        return out
    return infer, internal


def _runner_options(target: str, mode: str | None, streams: int | None, nireq: int | None) -> dict:
    if target != "openvino":
        if mode or streams or nireq:
            raise InputError("--mode, --streams and --nireq are OpenVINO settings; this artifact runs on " + target)
        return {}
    return {k: v for k, v in (("mode", mode), ("streams", streams), ("nireq", nireq)) if v}


def _async_throughput(runner, data, seconds: float) -> dict:
    """OpenVINO's throughput mode: ``nireq`` requests in flight, images per second over the wall time."""
    from medexport.bench.latency import latency_stats

    run = runner.run_async(data, seconds=max(seconds, 1.0), warmup_seconds=min(1.0, seconds))
    images = run["requests"] * data.shape[0]
    stats = latency_stats(run["latencies_ms"])
    return {"batch": int(data.shape[0]), "nireq": runner.nireq, "requests": run["requests"],
            "throughput_per_s": round(images / run["wall_s"], 2), "median_ms": round(stats["median_ms"], 4),
            "p99_ms": round(stats["p99_ms"], 4)}


def _end_to_end(runner, source: Path, dims: list, size: tuple[int, ...] | None, task: str, repeats: int) -> dict:
    from medexport.bench.endtoend import end_to_end
    from medexport.imaging.spec import PreprocessSpec

    patch = tuple(int(d) for d in dims[2:])
    size = tuple(size) if size else patch
    if len(size) != len(patch):
        raise InputError(f"--e2e-size {size} must have one size per spatial axis of the artifact's input {patch}")
    spec = PreprocessSpec(spatial_size=size, channels=int(dims[1]))
    roi = patch if any(s > p for s, p in zip(size, patch)) else None
    return end_to_end(runner.infer, source, spec, task=task, roi_size=roi, repeats=repeats)


def _contention(path, target, clients, dims, batch, device, threads, warmup, seconds, background_load, options):
    from medexport.bench.contention import run_clients
    from medexport.zoo.samples import real_inputs

    data = real_inputs((batch, *dims[1:]), batch)
    rule = warmup if isinstance(warmup, WarmupRule) else WarmupRule()
    return [run_clients(path, target, clients=n, batch=data, seconds=seconds, device=device, threads=threads,
                        warmup=rule, background_load=background_load, options=options) for n in clients]


def _memory(before: float | None, loaded: float | None, peak: float, gpu: float | None,
            gpu_used: list[float] | None) -> dict:
    """Host memory in MiB: resident before and after opening the artifact, and the process's high-water mark
    (interpreter and libraries included); the GPU allocator's peak where the runtime reports one, else the
    memory in use on each GPU after the run with the runtime still open (nvidia-smi: other processes count)."""
    peak = max(v for v in (peak, before, loaded) if v is not None)   # the lazy high-water mark may trail a reading
    out = {"rss_before_open_mib": _r(before), "rss_after_open_mib": _r(loaded), "peak_rss_mib": _r(peak)}
    if gpu is not None:
        out["peak_gpu_mib"] = _r(gpu)
    if gpu_used is not None:
        out["gpu_used_mib_device_wide"] = gpu_used
    return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _warnings(busy: str | None, results: list[dict]) -> str | None:
    found = [busy] + [f"batch {r['batch']}: {r['warning']}" for r in results if r.get("warning")]
    return "; ".join(w for w in found if w) or None
