"""ONNX Runtime backend: the artifact is the ONNX file plus a sidecar recording where nodes ran."""
from medexport.runtimes.onnxruntime.builder import Builder
from medexport.runtimes.onnxruntime.runner import Runner

__all__ = ["Builder", "Runner"]
