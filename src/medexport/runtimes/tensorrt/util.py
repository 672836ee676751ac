"""TensorRT helpers that differ between major versions 10 and 11."""
from __future__ import annotations

from types import ModuleType


def major_version(trt: ModuleType) -> int:
    return int(trt.__version__.split(".")[0])


def network_flags(trt: ModuleType) -> int:
    """Strongly typed networks: opt-in flag in TensorRT 10, the only mode (and no flag needed) in 11."""
    if major_version(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def torch_dtype(trt: ModuleType, dtype):
    """TensorRT tensor dtype -> torch dtype, for device buffers allocated with torch."""
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8,
             trt.int32: torch.int32, trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]
