"""Run a TensorRT plan with torch-allocated CUDA buffers (no pycuda needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medexport.errors import BackendUnavailableError, InputError, ModelLoadError
from medexport.runtimes._base import Runner as _Runner
from medexport.runtimes.tensorrt.util import torch_dtype


class Runner(_Runner):
    """Deserializes a plan and runs it with the name-based tensor API (TensorRT 10/11: execute_async_v3)."""

    backend = "tensorrt"

    def __init__(self, plan_path: str | Path, *, device: str | None = None, threads: int | None = None,
                 precision: str = "fp32"):
        """Runs on the current CUDA device in the precisions the plan was built with: ``device``, ``threads`` and
        ``precision`` are not used."""
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("the tensorrt backend needs a CUDA GPU; none is visible to torch")
        self.trt, self.torch = trt, torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise ModelLoadError(f"TensorRT cannot deserialize {Path(plan_path).name} (built by another version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream()

    @property
    def input_shape(self) -> list[int | None]:
        return [d if d >= 0 else None for d in self.engine.get_tensor_shape(self.inputs[0])]

    def devices(self) -> list[str]:
        return [self.torch.cuda.get_device_name(0)]

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        torch, trt = self.torch, self.trt
        name = self.inputs[0]
        with torch.cuda.stream(self.stream):  # copies, engine and outputs all on one stream: no race
            x = torch.from_numpy(batch).to("cuda").to(torch_dtype(trt, self.engine.get_tensor_dtype(name)))
            if not self.context.set_input_shape(name, tuple(x.shape)):
                raise InputError(f"input shape {tuple(x.shape)} is outside the engine's optimization profile")
            self.context.set_tensor_address(name, x.data_ptr())
            outs = {}
            for out in self.outputs:
                shape = tuple(self.context.get_tensor_shape(out))
                outs[out] = torch.empty(shape, dtype=torch_dtype(trt, self.engine.get_tensor_dtype(out)), device="cuda")
                self.context.set_tensor_address(out, outs[out].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ModelLoadError("TensorRT execution failed")
            result = outs[self.outputs[0]].float().cpu()  # .cpu() waits for the stream
        return result.numpy()
