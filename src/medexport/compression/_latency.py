"""Measured latency of whole models on a backend, side by side, and a cache of what one layer's swap saves.

The latency allocator asks what swapping one layer for a factorized chain saves *in the model*: FLOPs do
not say (a 1x1 -> kxk -> 1x1 chain on a small 3D map can be slower than the conv it replaces), and a
layer timed alone does not either (the backend picks layouts, reorders and kernels for the whole graph,
and a conv's fused BatchNorm, ReLU and concat neighbours change with it). :class:`Timer`
exports and compiles each model once and times any set of them interleaved, round-robin, with the bench
harness (:func:`medexport.bench.interleaved_rounds`), so load from other processes slows them alike and
their ratios hold. :class:`SavingsCache` keeps the measured
saving (a fraction of the model's time, so it survives a change of machine load) keyed by the machine
(CPU model and instruction sets, backend and its version, thread count, cache schema), input shape, the model's structure
and the swap, so a second allocation on the same model (another target) measures no swap again. The
cache lives in ``$MEDEXPORT_CACHE`` (default ``~/.cache/medexport``); it is optional: an unreadable or
unwritable one is warned about and skipped. Example::

    with Timer("openvino", (1, 1, 128, 128)) as timer:
        before, after = timer.time([timer.open(model), timer.open(small)])
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn


_SCHEMA = 4  # bump when what a cached number means changes (4: the CPU's instruction sets in the fingerprint)


def cache_path() -> Path:
    return Path(os.environ.get("MEDEXPORT_CACHE", Path.home() / ".cache" / "medexport")) / "layer_latency.json"


def fingerprint(backend: str, threads: int | None) -> str:
    """What a latency depends on besides the model: cache schema, CPU model and instruction sets (a cloud CPU
    named alike may come with or without AVX-512/VNNI, and INT8 and narrow convs time differently), backend
    version, thread count."""
    import importlib.metadata

    from medexport.bench.environment import cpu_model, isa_flags
    from medexport.runtimes import get_spec

    try:
        version = importlib.metadata.version(get_spec(backend).requires)   # the package that runs it
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    count = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return f"v{_SCHEMA}|{cpu_model()}|{'+'.join(isa_flags())}|{backend}-{version}|threads={count}"


def structure(module: "nn.Module") -> str:
    """A module's structure (its ``repr``: types, channels, kernels, strides; no weights), whitespace-normalized."""
    return " ".join(repr(module).split())


class Timer:
    """Models exported and compiled once on ``backend`` at ``input_shape``, timed interleaved as often as asked.

    The timing is the bench harness's (:func:`medexport.bench.interleaved_rounds`): each round calls every model
    ``calls`` times in turn, every other round in reverse order. A call of :meth:`time` runs at least ``rounds``
    rounds and enough for ``min_seconds`` in all, but once 3 rounds are done no more than 30 x ``min_seconds``
    (slow models), as each model's warm-up call predicts."""

    def __init__(self, backend: str, input_shape: tuple[int, ...], *, threads: int | None = None, rounds: int = 15,
                 calls: int = 1, min_seconds: float = 0.3) -> None:
        self.backend, self.input_shape, self.threads = backend, tuple(input_shape), threads
        self.rounds, self.calls, self.min_seconds = rounds, calls, min_seconds
        self.batch = np.random.default_rng(0).random(self.input_shape, dtype=np.float32)
        self.runners: dict[int, tuple[contextlib.ExitStack, object]] = {}  # handle -> (its closer, runner)
        self.batches: dict[int, np.ndarray] = {}  # handle -> its own input, when not the timer's input_shape
        self.call_ms: dict[int, float] = {}  # handle -> its last warm-up call's ms
        self._next = 0

    def __enter__(self) -> "Timer":
        self._tmp = tempfile.TemporaryDirectory()
        return self

    def __exit__(self, *exc) -> None:
        self.close(list(self.runners))
        self._tmp.cleanup()

    def open(self, module: "nn.Module") -> int:
        """Export and compile ``module``, and warm it up; returns the handle :meth:`time` takes."""
        from medexport.exporter import export_onnx

        path = Path(self._tmp.name) / f"m{self._next}.onnx"
        export_onnx(module, self.input_shape, path, dynamic_batch=False, simplify=False)
        return self.open_onnx(path)

    def open_onnx(self, path: Path, input_shape: tuple[int, ...] | None = None) -> int:
        """Compile an ONNX file (fed a random input of ``input_shape``, default the timer's) and warm it up."""
        from medexport.bench import measure_latency
        from medexport.runtimes import open_runner

        handle, self._next = self._next, self._next + 1
        if input_shape is not None and tuple(input_shape) != self.input_shape:
            self.batches[handle] = np.random.default_rng(handle).random(tuple(input_shape), dtype=np.float32)
        stack = contextlib.ExitStack()
        runner = stack.enter_context(open_runner(path, self.backend, threads=self.threads))
        self.runners[handle] = (stack, runner)
        warm = measure_latency(self._infer(handle), self.batch, warmup=2, iterations=1, min_seconds=0)
        self.call_ms[handle] = warm.median_ms
        return handle

    def scratch(self, name: str) -> Path:
        """A path in the timer's temporary folder, for an ONNX file built by hand."""
        return Path(self._tmp.name) / name

    def _infer(self, handle: int):
        """The handle's runner as the bench harness calls it, on the handle's own input when it has one."""
        runner = self.runners[handle][1]
        own = self.batches.get(handle)
        return runner.infer if own is None else (lambda _batch: runner.infer(own))

    def close(self, handles: list[int]) -> None:
        for handle in handles:
            self.runners.pop(handle)[0].close()
            self.call_ms.pop(handle)
            self.batches.pop(handle, None)

    def time(self, handles: list[int], quantile: float = 50, rounds: int | None = None) -> list[float]:
        """The ``quantile`` of each model's per-round ms (median by default) over ``rounds`` (default: the timer's)
        round-robin rounds. A low quantile is the better estimate of a model's cost alone on a busy machine;
        the median is what a user sees."""
        from medexport.bench import interleaved_rounds

        infers = {h: self._infer(h) for h in handles}
        per_round = interleaved_rounds(infers, self.batch, rounds=self._rounds(handles, rounds or self.rounds),
                                       warmup=0, iterations=self.calls, min_seconds=0)
        return [float(np.percentile([r.median_ms for r in per_round[h]], quantile)) for h in handles]

    def _rounds(self, handles: list[int], rounds: int) -> int:
        """At least ``rounds`` and ``min_seconds`` worth, at most 30 x ``min_seconds`` worth past 3 rounds."""
        round_s = max(self.calls * sum(self.call_ms[h] for h in handles) / 1e3, 1e-6)
        return min(max(rounds, math.ceil(self.min_seconds / round_s)), max(3, int(30 * self.min_seconds / round_s)))


def compare(modules: list["nn.Module"], input_shape: tuple[int, ...], backend: str = "openvino", *,
            threads: int | None = None, rounds: int = 15, min_seconds: float = 0.3, calls: int = 3) -> list[float]:
    """Median ms of each module at ``input_shape``, timed side by side (compiled together, interleaved)."""
    with Timer(backend, input_shape, threads=threads, rounds=rounds, calls=calls, min_seconds=min_seconds) as timer:
        return timer.time([timer.open(m) for m in modules])


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


class _Cache:
    """Numbers keyed by ``prefix|what``, read from the cache file at start and merged back into it at :meth:`save`."""

    def __init__(self, prefix: str) -> None:
        self.path = cache_path()
        self.cache: dict[str, float] = _read_cache(self.path)
        self.prefix = prefix
        self.new: dict[str, float] = {}  # measured here, merged into the file at save

    def lookup(self, what: str) -> float | None:
        return self.cache.get(f"{self.prefix}|{what}")

    def store(self, what: str, value: float) -> None:
        self.new[f"{self.prefix}|{what}"] = value
        self.cache.update(self.new)

    def save(self) -> None:
        """Merge this run's measurements into the file as it is now (another run may have added some), atomically;
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


class SavingsCache(_Cache):
    """Fraction of a model's measured time that swapping one layer for one chain saves, per machine and model."""

    def __init__(self, backend: str, threads: int | None, model: "nn.Module", input_shape: tuple[int, ...]) -> None:
        digest = hashlib.sha1(structure(model).encode()).hexdigest()[:16]
        super().__init__(f"{fingerprint(backend, threads)}|{'x'.join(map(str, input_shape))}|{digest}")

    def get(self, name: str, chain: "nn.Module") -> float | None:
        return self.lookup(f"{name}|{structure(chain)}")

    def put(self, name: str, chain: "nn.Module", saved: float) -> None:
        self.store(f"{name}|{structure(chain)}", saved)


class LayerCache(_Cache):
    """One layer's time alone relative to the reference conv timed beside it, per machine; keys name the layer's
    configuration (kind, kernel, stride, channels, input shape), not a model, so every model shares them."""

    def __init__(self, backend: str, threads: int | None) -> None:
        super().__init__(f"{fingerprint(backend, threads)}|layer")
