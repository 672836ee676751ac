"""The two roles every backend plays: a Builder (ONNX -> backend artifact) and a Runner (load, infer).

Template methods: ``Builder.build`` validates and calls ``build_impl``; ``Runner.infer`` validates the
input and calls ``infer_impl``. Runners are context managers and callables (``runner(batch)``), so
they plug straight into evaluation as predictors.

Every backend's classes take one constructor signature, so the registry builds and opens any of them alike:
``Builder(*, device=None, precision="fp32", max_batch=8)`` and
``Runner(path, *, device=None, threads=None, precision="fp32")``; each ignores what it does not use.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medexport.errors import DataError, InputError, ModelLoadError


@dataclass
class BuildResult:
    """Files a builder wrote and facts about the build (devices, precision, notes)."""

    backend: str
    artifact: Path
    files: list[Path]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"backend": self.backend, "artifact": self.artifact.name,
                "files": [f.name for f in self.files], **self.info}


class Builder(abc.ABC):
    """Turns an ONNX file into a backend artifact inside ``out_dir``."""

    backend: str = ""

    def build(self, onnx_path: str | Path, out_dir: str | Path) -> BuildResult:
        onnx_path, out_dir = Path(onnx_path), Path(out_dir)
        if not onnx_path.is_file():
            raise ModelLoadError(f"ONNX file not found: {onnx_path}")
        out_dir.mkdir(parents=True, exist_ok=True)
        return self.build_impl(onnx_path, out_dir)

    @abc.abstractmethod
    def build_impl(self, onnx_path: Path, out_dir: Path) -> BuildResult: ...


class Runner(abc.ABC):
    """Loads an artifact and runs inference on float32 NumPy batches."""

    backend: str = ""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the session/engine; the default has nothing to release."""

    @property
    @abc.abstractmethod
    def input_shape(self) -> list[int | None]:
        """Expected input shape; None marks a dynamic dimension."""

    @abc.abstractmethod
    def devices(self) -> list[str]:
        """Devices or execution providers that actually run the model (not just the ones requested)."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "devices": self.devices()}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        expected = self.input_shape
        if batch.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, batch.shape)):
            shown = "x".join("N" if e is None else str(e) for e in expected)
            raise InputError(f"input of shape {'x'.join(map(str, batch.shape))} does not match the model's {shown}")
        if not np.isfinite(batch).all():
            raise DataError("input batch contains NaN or Inf")
        return self.infer_impl(batch)

    __call__ = infer

    @abc.abstractmethod
    def infer_impl(self, batch: np.ndarray) -> np.ndarray: ...
