"""Run an OpenVINO IR (or ONNX) on a device and report the devices that really execute it."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from medexport.errors import BackendUnavailableError, InputError, ModelLoadError
from medexport.runtimes._base import Runner as _Runner
from medexport.runtimes.openvino.util import MODES, compile_config


class Runner(_Runner):
    """Compiled OpenVINO model; ``devices()`` reads EXECUTION_DEVICES from the compiled model."""

    backend = "openvino"

    def __init__(self, model_path: str | Path, *, device: str | None = None, threads: int | None = None,
                 precision: str = "fp32", mode: str = "latency", streams: int | None = None, nireq: int | None = None):
        """``device``: an OpenVINO device (default CPU); ``precision`` sets the inference precision hint.
        ``mode``: the performance hint, "latency" or "throughput" (see :meth:`run_async`); ``streams``: CPU
        streams (default: the hint's); ``nireq``: infer requests :meth:`run_async` keeps in flight (default:
        the compiled model's OPTIMAL_NUMBER_OF_INFER_REQUESTS)."""
        import openvino as ov

        if mode not in MODES:
            raise InputError(f"OpenVINO mode must be one of {', '.join(MODES)}, got '{mode}'")

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
        config = compile_config(device, precision, mode, streams)
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
        self.mode = mode
        self.nireq = nireq or int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    @property
    def input_shape(self) -> list[int | None]:
        shape = self.compiled.input(0).get_partial_shape()
        return [d.get_length() if d.is_static else None for d in shape]

    def devices(self) -> list[str]:
        return list(self.compiled.get_property("EXECUTION_DEVICES"))

    def describe(self) -> dict:
        info = super().describe()
        info.update(mode=self.mode, streams=int(self.compiled.get_property("NUM_STREAMS")), nireq=self.nireq)
        for key, prop in (("threads", "INFERENCE_NUM_THREADS"), ("cpu_pinning", "ENABLE_CPU_PINNING")):
            try:
                info[key] = self.compiled.get_property(prop)
            except RuntimeError:   # a device without the property (GPU, NPU)
                pass
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            info["inference_precision"] = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        except RuntimeError:
            pass
        return info

    def last_latency_ms(self) -> float:
        """OpenVINO's own timing of the last synchronous call (``InferRequest.latency``, what benchmark_app reports):
        the inference inside the runtime, without the Python binding's input wrapping, GIL and output copy."""
        return float(self.request.latency)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: batch})
        return np.asarray(result[self.compiled.output(0)])

    def run_async(self, batch: np.ndarray, *, seconds: float, warmup_seconds: float = 0.0) -> dict:
        """Keep ``nireq`` requests in flight for ``seconds`` (as OpenVINO's benchmark_app does in async mode);
        returns the wall time, the number of requests completed and each request's latency (ms, start of the
        submit to its callback). ``warmup_seconds`` of the same run first, not counted."""
        import openvino as ov

        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.infer(batch)   # validates the input once, as every synchronous call would
        latencies: list[float] = []
        queue = ov.AsyncInferQueue(self.compiled, self.nireq)
        queue.set_callback(lambda request, started: latencies.append((time.perf_counter() - started) * 1e3))
        for phase, counted in ((warmup_seconds, False), (seconds, True)):
            latencies.clear()
            start, submitted = time.perf_counter(), 0
            while time.perf_counter() - start < phase or (counted and submitted < self.nireq):
                queue.get_idle_request_id()   # waits for a free request, so its latency starts at the submit
                queue.start_async({0: batch}, time.perf_counter())
                submitted += 1
            queue.wait_all()
            wall = time.perf_counter() - start
        return {"wall_s": wall, "requests": len(latencies), "latencies_ms": list(latencies)}
