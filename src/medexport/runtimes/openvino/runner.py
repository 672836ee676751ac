"""Run an OpenVINO IR (or ONNX) on a device and report the devices that really execute it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medexport.errors import BackendUnavailableError, ModelLoadError
from medexport.runtimes._base import Runner as _Runner
from medexport.runtimes.openvino.util import compile_config


class Runner(_Runner):
    """Compiled OpenVINO model; ``devices()`` reads EXECUTION_DEVICES from the compiled model."""

    backend = "openvino"

    def __init__(self, model_path: str | Path, *, device: str | None = None, threads: int | None = None,
                 precision: str = "fp32"):
        """``device``: an OpenVINO device (default CPU); ``precision`` sets the inference precision hint."""
        import openvino as ov

        device = device or "CPU"
        core = ov.Core()
        if device.split(":")[0].split(".")[0] not in {d.split(".")[0] for d in core.available_devices} and \
                not device.startswith(("AUTO", "MULTI", "HETERO")):
            raise BackendUnavailableError(
                f"OpenVINO device '{device}' is not available here (available: {', '.join(core.available_devices)})"
            )
        model_path = Path(model_path)
        if model_path.suffix == ".xml" and not model_path.with_suffix(".bin").is_file():
            raise ModelLoadError(f"{model_path.name} has no {model_path.with_suffix('.bin').name} beside it "
                                 "(an OpenVINO IR is an .xml/.bin pair)")
        config = compile_config(device, precision)
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        try:
            model = core.read_model(str(model_path))
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"OpenVINO cannot load {Path(model_path).name}: {str(exc).splitlines()[0][:200]}") from exc
        self.request = self.compiled.create_infer_request()
        self.device = device
        self.precision = precision

    @property
    def input_shape(self) -> list[int | None]:
        shape = self.compiled.input(0).get_partial_shape()
        return [d.get_length() if d.is_static else None for d in shape]

    def devices(self) -> list[str]:
        return list(self.compiled.get_property("EXECUTION_DEVICES"))

    def describe(self) -> dict:
        info = super().describe()
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            info["inference_precision"] = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        except RuntimeError:
            pass
        return info

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: batch})
        return np.asarray(result[self.compiled.output(0)])
