"""Run an ``nn.Module`` on NumPy batches (CPU or CUDA)."""
from __future__ import annotations

import numpy as np

from medexport._outputs import prediction
from medexport.errors import BackendUnavailableError
from medexport.runtimes._base import Runner as _Runner


class Runner(_Runner):
    """Eval-mode, no-grad torch inference; ``input_shape`` has a dynamic batch like the exported ONNX.

    ``dtype="float64"`` runs a model already cast with ``.double()`` and returns float64 outputs (the exact
    reference of parity); ``dtype="float16"`` casts the model to half precision (a GPU workstation's FP16
    runtime); the default returns float32. A model returning a tuple, list or dict yields its prediction
    (first tensor, ``None`` skipped: see ``medexport._outputs``), the same tensor the ONNX runners return as
    output 0. ``compile=True`` wraps the model in ``torch.compile`` (compiled on the first call, so a
    benchmark's warm-up must outlast it); ``threads`` sets torch's intra-op threads for the whole process.

    Example (GPU latency of a compressed model where TensorRT is absent)::

        with Runner(model, (1, 1, 128, 128), device="cuda", dtype="float16", compile=True) as runner:
            measure_latency(runner.infer, batch, warmup=WarmupRule())
    """

    backend = "torch"

    def __init__(self, model, input_shape: tuple[int, ...], *, device: str = "cpu", dtype: str = "float32",
                 compile: bool = False, threads: int | None = None):
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("the torch runner was asked for CUDA but no GPU is visible")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.model = model.eval().to(self.device)
        if self.dtype == torch.float16:
            self.model = self.model.half()
        self.compiled = compile
        if compile:
            self.model = torch.compile(self.model)
        self._shape = [None, *input_shape[1:]]

    @property
    def input_shape(self) -> list[int | None]:
        return list(self._shape)

    def devices(self) -> list[str]:
        if self.device.type == "cuda":
            return [self.torch.cuda.get_device_name(self.device)]
        return ["cpu"]

    def describe(self) -> dict:
        info = super().describe()
        info.update(dtype=str(self.dtype).removeprefix("torch."), compiled=self.compiled,
                    threads=self.torch.get_num_threads())
        return info

    def peak_gpu_memory_mib(self) -> float | None:
        """The most GPU memory torch's allocator held for tensors since the runner opened (None on CPU)."""
        if self.device.type != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated(self.device) / 2**20

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            out = prediction(self.model(torch.from_numpy(batch).to(self.device, self.dtype)))  # ONNX output 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out.to(torch.float64 if self.dtype == torch.float64 else torch.float32).cpu().numpy()
