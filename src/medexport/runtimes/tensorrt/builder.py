"""ONNX -> TensorRT plan with an optimization profile for the dynamic batch axis."""
from __future__ import annotations

from pathlib import Path

from medexport._io import atomic_path, write_json
from medexport.errors import ExportError
from medexport.runtimes._base import BuildResult
from medexport.runtimes._base import Builder as _Builder
from medexport.runtimes.tensorrt.util import major_version, network_flags


class Builder(_Builder):
    """Parses the ONNX into a strongly typed network and serializes the engine; batch range min..max."""

    backend = "tensorrt"

    def __init__(self, *, device: str | None = None, precision: str = "fp32", max_batch: int = 8, opt_batch: int = 1,
                 workspace_gib: float = 4.0):
        """Builds on the current CUDA device, strongly typed: the precision is the ONNX's own (FP32, FP16 or QDQ
        INT8), so ``device`` and ``precision`` are not used."""
        self.max_batch = max_batch
        self.opt_batch = opt_batch
        self.workspace_gib = workspace_gib

    def build_impl(self, onnx_path: Path, out_dir: Path) -> BuildResult:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.workspace_gib * (1 << 30)))
        tensor = network.get_input(0)
        shape = list(tensor.shape)
        if shape and shape[0] == -1:
            profile = builder.create_optimization_profile()
            rest = shape[1:]
            profile.set_shape(tensor.name, [1, *rest], [self.opt_batch, *rest], [self.max_batch, *rest])
            config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
        plan = out_dir / f"{onnx_path.stem}.plan"
        with atomic_path(plan) as tmp:
            tmp.write_bytes(bytes(serialized))
        import torch

        info = {
            "tensorrt_version": trt.__version__,
            "tensorrt_major": major_version(trt),
            "strongly_typed": True,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "input": {"name": tensor.name, "shape": shape, "batch_range": [1, self.opt_batch, self.max_batch]},
            "note": "raw TensorRT plan: valid only for this TensorRT version and GPU model",
        }
        sidecar = write_json(plan.with_suffix(".plan.json"), info)
        return BuildResult(self.backend, plan, [plan, sidecar], info)
