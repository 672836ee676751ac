"""Run an ``nn.Module`` on NumPy batches (CPU or CUDA)."""
from __future__ import annotations

import numpy as np

from medexport._outputs import prediction
from medexport.errors import BackendUnavailableError
from medexport.runtimes._base import Runner as _Runner


class Runner(_Runner):
    """Eval-mode, no-grad torch inference; ``input_shape`` has a dynamic batch like the exported ONNX.

    ``dtype="float64"`` runs a model already cast with ``.double()`` and returns float64 outputs (the exact
    reference of parity); the default returns float32. A model returning a tuple, list or dict yields its
    prediction (first tensor, ``None`` skipped: see ``medexport._outputs``), the same tensor the ONNX runners
    return as output 0.
    """

    backend = "torch"

    def __init__(self, model, input_shape: tuple[int, ...], *, device: str = "cpu", dtype: str = "float32"):
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("the torch runner was asked for CUDA but no GPU is visible")
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.model = model.eval().to(self.device)
        self._shape = [None, *input_shape[1:]]

    @property
    def input_shape(self) -> list[int | None]:
        return list(self._shape)

    def devices(self) -> list[str]:
        if self.device.type == "cuda":
            return [self.torch.cuda.get_device_name(self.device)]
        return ["cpu"]

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            out = prediction(self.model(torch.from_numpy(batch).to(self.device, self.dtype)))  # ONNX output 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out.to(torch.float64 if self.dtype == torch.float64 else torch.float32).cpu().numpy()
