"""Measured latency of one layer (or one factorized chain) on a backend, from a single-layer ONNX, cached.

The latency allocator asks what a layer costs as it is and as each candidate chain; FLOPs do not
say (a 1x1 -> kxk -> 1x1 chain on a small 3D map can be slower than the conv it replaces). Each
module is exported alone at its input shape, compiled on the backend and timed (median); results are
kept in a JSON cache keyed by the machine (CPU model, backend and its version, the thread count actually
used, the cache schema), input shape and the module's structure (``repr``: channels, kernel, stride,
padding, groups), so a second run, or a second model with the same layer, measures nothing, and a copied
cache or an upgraded backend measures afresh. The cache lives in ``$MEDEXPORT_CACHE`` (default
``~/.cache/medexport``); it is optional: an unreadable or unwritable one is warned about and skipped. Example::

    ms = LayerTimer("openvino").time(nn.Conv2d(64, 64, 3, padding=1), (1, 64, 32, 32))
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn


_SCHEMA = 2  # bump when what a cached number means changes (e.g. how the floor is taken off)


def cache_path() -> Path:
    return Path(os.environ.get("MEDEXPORT_CACHE", Path.home() / ".cache" / "medexport")) / "layer_latency.json"


def fingerprint(backend: str, threads: int | None) -> str:
    """What a latency depends on besides the layer: cache schema, CPU model, backend version, thread count."""
    import importlib.metadata

    from medexport.benchmarks.environment import cpu_model

    try:
        version = importlib.metadata.version(backend)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    count = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return f"v{_SCHEMA}|{cpu_model()}|{backend}-{version}|threads={count}"


def _read_cache(path: Path) -> dict[str, float]:
    """The cached entries, or {} (with a warning when a file is there but unusable)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warnings.warn(f"layer latency cache {path} is unreadable ({exc}); measuring without it", stacklevel=3)
        return {}
    if not isinstance(data, dict):
        warnings.warn(f"layer latency cache {path} is not a JSON object; measuring without it", stacklevel=3)
        return {}
    return data


class LayerTimer:
    """Median latency (ms) of modules on ``backend``, measured once per structure and input shape.

    Modules compared with each other (a layer and its candidates; a model before and after) are timed
    interleaved, round-robin, so load from other processes slows them alike and their ratio holds.
    """

    def __init__(self, backend: str, *, threads: int | None = None, rounds: int = 15, calls: int = 3,
                 min_seconds: float = 0.3) -> None:
        self.backend, self.threads, self.rounds, self.calls = backend, threads, rounds, calls
        self.min_seconds = min_seconds
        self.path = cache_path()
        self.cache: dict[str, float] = _read_cache(self.path)
        self.fingerprint = fingerprint(backend, threads)
        self.new: dict[str, float] = {}  # measured by this timer, merged into the file at save
        self.measured = 0

    def key(self, module: "nn.Module", input_shape: tuple[int, ...]) -> str:
        return f"{self.fingerprint}|{'x'.join(map(str, input_shape))}|{' '.join(repr(module).split())}"

    def times(self, modules: list["nn.Module"], input_shape: tuple[int, ...]) -> list[float]:
        """Marginal median ms of each module at ``input_shape``: the time of a bare ReLU at that shape (the
        backend's fixed cost per call and the input copy, which no rank changes) is taken off. If any module
        is not cached, all are timed again together."""
        from torch import nn

        keys = [self.key(m, input_shape) for m in modules]
        if any(k not in self.cache for k in keys):
            floor, *times = self.compare([nn.ReLU(), *modules], input_shape, quantile=10)
            self.new.update((k, max(t - floor, 1e-3)) for k, t in zip(keys, times))
            self.cache.update(self.new)
            self.measured += len(keys)
        return [self.cache[k] for k in keys]

    def compare(self, modules: list["nn.Module"], input_shape: tuple[int, ...], quantile: float = 50) -> list[float]:
        """The ``quantile`` (median by default) of each module's (or whole model's) ms, timed interleaved, never
        cached. Single layers use a low quantile: on a busy machine it is the best estimate of the cost alone."""
        import contextlib
        import time

        from medexport.exporter import export_onnx
        from medexport.runtimes._registry import open_runner

        batch = np.random.default_rng(0).random(input_shape, dtype=np.float32)
        samples: list[list[float]] = [[] for _ in modules]
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            runners = []
            for i, module in enumerate(modules):
                path = Path(tmp) / f"m{i}.onnx"
                export_onnx(module, tuple(input_shape), path, dynamic_batch=False, simplify=False)
                runners.append(stack.enter_context(open_runner(path, self.backend, threads=self.threads)))
            for runner in runners:  # warm-up
                for _ in range(3):
                    runner.infer(batch)
            start, done = time.perf_counter(), 0
            while done < self.rounds or time.perf_counter() - start < self.min_seconds:
                for runner, out in zip(runners, samples):
                    for _ in range(self.calls):
                        t0 = time.perf_counter()
                        runner.infer(batch)
                        out.append((time.perf_counter() - t0) * 1e3)
                done += 1
                if time.perf_counter() - start > 30 * self.min_seconds:
                    break
        return [float(np.percentile(s, quantile)) for s in samples]

    def save(self) -> None:
        """Merge this timer's measurements into the file as it is now (another run may have added some), atomically;
        an unwritable cache is a warning, not an error."""
        from medexport._io import write_json

        if not self.new:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {**_read_cache(self.path), **self.new})
        except OSError as exc:
            warnings.warn(f"could not write the layer latency cache {self.path} ({exc}); continuing without it",
                          stacklevel=2)
