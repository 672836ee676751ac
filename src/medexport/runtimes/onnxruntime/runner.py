"""Run an ONNX file with ONNX Runtime and report the providers that are really active."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medexport.errors import BackendUnavailableError, ModelLoadError
from medexport.runtimes._base import Runner as _Runner
from medexport.runtimes.onnxruntime.util import provider_names


class Runner(_Runner):
    """ONNX Runtime session. Raises if the first requested provider silently fell back to another."""

    backend = "onnxruntime"

    def __init__(self, onnx_path: str | Path, *, device: str | None = None, threads: int | None = None,
                 precision: str = "fp32"):
        """``device``: the execution provider to run on ("cpu", "cuda" or its full name; CPU is the fallback
        for nodes it lacks); ``precision`` is the ONNX's own, so it is not used."""
        import onnxruntime as ort

        self.requested = provider_names(device)
        if self.requested[0] not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"ONNX Runtime here has no {self.requested[0]} (available: {', '.join(ort.get_available_providers())}); "
                + ("install the GPU build in place of the CPU one: pip uninstall -y onnxruntime && pip install "
                   "onnxruntime-gpu (the medexport[cuda] extra)" if self.requested[0] == "CUDAExecutionProvider"
                   else "install the onnxruntime build for your hardware")
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=self.requested)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"ONNX Runtime cannot load {Path(onnx_path).name}: {str(exc).splitlines()[0][:200]}") from exc
        active = self.session.get_providers()
        if self.requested[0] not in active:
            raise BackendUnavailableError(
                f"ONNX Runtime could not use {self.requested[0]} and fell back to {', '.join(active)} "
                f"(available here: {', '.join(ort.get_available_providers())})"
            )
        self.input_name = self.session.get_inputs()[0].name
        self.threads = threads

    def describe(self) -> dict:
        info = super().describe()
        info["threads"] = self.threads   # None: ONNX Runtime's default, one per physical core
        return info

    @property
    def input_shape(self) -> list[int | None]:
        return [d if isinstance(d, int) else None for d in self.session.get_inputs()[0].shape]

    def devices(self) -> list[str]:
        return list(self.session.get_providers())

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]
