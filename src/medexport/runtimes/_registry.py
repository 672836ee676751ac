"""Registry of backends with availability checks that name the extra to install."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from medexport.errors import BackendUnavailableError, InputError


@dataclass(frozen=True)
class BackendSpec:
    """A backend: its subpackage, the package it needs, and the extra that installs it."""

    name: str
    module: str
    requires: str
    extra: str | None
    description: str

    def available(self) -> bool:
        if importlib.util.find_spec(self.requires) is None:
            return False
        try:
            importlib.metadata.version(self.requires)
        except importlib.metadata.PackageNotFoundError:
            return self.requires == "tensorrt" and _tensorrt_wheel_present()
        return True

    def load(self) -> ModuleType:
        """Import the backend subpackage; raise BackendUnavailableError if its package is missing."""
        if not self.available():
            hint = f"pip install 'medexport[{self.extra}]'" if self.extra else f"pip install {self.requires}"
            extra = " (it also needs an NVIDIA GPU with CUDA)" if self.name == "tensorrt" else ""
            raise BackendUnavailableError(
                f"the {self.name} backend needs the '{self.requires}' package, which is not installed: {hint}{extra}"
            )
        return importlib.import_module(self.module)


def _tensorrt_wheel_present() -> bool:
    """TensorRT ships as 'tensorrt' or as 'tensorrt-cu12'/'tensorrt-cu13' distributions."""
    for dist in ("tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13"):
        try:
            importlib.metadata.version(dist)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("onnxruntime", "medexport.runtimes.onnxruntime", "onnxruntime", None,
                    "ONNX Runtime session (CPU or the execution provider you ask for)"),
        BackendSpec("openvino", "medexport.runtimes.openvino", "openvino", "openvino",
                    "OpenVINO IR (.xml/.bin) compiled for CPU/GPU/NPU"),
        BackendSpec("tensorrt", "medexport.runtimes.tensorrt", "tensorrt", "tensorrt",
                    "TensorRT engine (.plan) built on an NVIDIA GPU"),
        BackendSpec("torch", "medexport.runtimes.torch", "torch", None,
                    "the PyTorch model itself (reference, and GPU latency where a GPU exists)"),
    )
}
TARGETS = ("onnxruntime", "openvino", "tensorrt")


def timed_backends() -> list[str]:
    return ["onnxruntime", "openvino"]


def list_backends() -> list[str]:
    return list(BACKENDS)


def make_builder(target: str, *, device: str | None = None, max_batch: int = 8, precision: str = "fp32"):
    """The builder of ``target`` configured for ``device`` (ORT provider or OpenVINO device).

    ``precision`` matters to OpenVINO only (fp16: FP16 IR and f16 inference hint); ONNX Runtime and
    TensorRT take their precision from the ONNX file they are given (FP32, FP16 or QDQ INT8).
    """
    backend = get_backend(target)
    if target == "onnxruntime":
        return backend.Builder(providers=[device] if device else None)
    if target == "openvino":
        return backend.Builder(device=device or "CPU", precision=precision)
    return backend.Builder(max_batch=max_batch)


def open_runner(path, target: str, *, device: str | None = None, threads: int | None = None,
                precision: str = "fp32"):
    """A runner for the artifact at ``path`` on ``target``; raises ModelLoadError if the file is missing."""
    from pathlib import Path

    from medexport.errors import ModelLoadError

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"artifact not found: {path}")
    backend = get_backend(target)
    if target == "onnxruntime":
        return backend.Runner(path, providers=[device] if device else None, threads=threads)
    if target == "openvino":
        return backend.Runner(path, device=device or "CPU", threads=threads, precision=precision)
    return backend.Runner(path)


def get_backend(name: str) -> ModuleType:
    """The backend subpackage ``name`` (which exposes ``Builder`` and ``Runner``), imported on demand."""
    spec = BACKENDS.get(name)
    if spec is None:
        raise InputError(f"unknown target '{name}'; choose one of: {', '.join(TARGETS)}")
    return spec.load()
