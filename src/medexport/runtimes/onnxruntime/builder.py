"""ONNX -> ONNX Runtime: check the session loads with the requested providers and record placement."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medexport._io import write_json
from medexport.errors import BackendUnavailableError
from medexport.runtimes._base import BuildResult
from medexport.runtimes._base import Builder as _Builder
from medexport.runtimes.onnxruntime.runner import Runner
from medexport.runtimes.onnxruntime.util import node_placement


class Builder(_Builder):
    """ONNX Runtime runs the ONNX file itself; the build proves it loads where asked and says where nodes ran."""

    backend = "onnxruntime"

    def __init__(self, *, device: str | None = None, precision: str = "fp32", max_batch: int = 8):
        """``device``: the execution provider ("cpu", "cuda" or its full name); the precision is the ONNX's own
        and the batch is dynamic, so ``precision`` and ``max_batch`` are not used."""
        self.device = device

    def build_impl(self, onnx_path: Path, out_dir: Path) -> BuildResult:
        with Runner(onnx_path, device=self.device) as runner:
            active = runner.devices()
            shape = [d or 1 for d in runner.input_shape]
            placement = node_placement(onnx_path, active, np.zeros(shape, np.float32), runner.input_name)
        requested = runner.requested[0]
        if requested not in placement:
            raise BackendUnavailableError(
                f"ONNX Runtime ran no node on {requested}; it fell back to {', '.join(placement) or 'nothing'}"
            )
        sidecar = out_dir / f"{onnx_path.stem}.onnxruntime.json"
        info = {"providers_requested": runner.requested, "providers_active": active, "nodes_per_provider": placement}
        write_json(sidecar, info)
        return BuildResult(self.backend, onnx_path, [onnx_path, sidecar], info)
