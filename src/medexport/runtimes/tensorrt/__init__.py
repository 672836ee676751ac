"""TensorRT backend: a raw serialized plan (.plan) with a sidecar JSON, built strongly typed.

Written against the documented TensorRT 10 and 11 Python APIs. TensorRT cannot be installed on our
development and CI machines (no GPU, not on the package registries), so this backend's tests skip
there; precision comes from the ONNX itself (FP32, or Q/DQ INT8), never from builder flags, which
TensorRT 11 removed.
"""
from medexport.runtimes.tensorrt.builder import Builder
from medexport.runtimes.tensorrt.runner import Runner

__all__ = ["Builder", "Runner"]
