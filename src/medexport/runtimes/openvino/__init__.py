"""OpenVINO backend: the artifact is an IR pair (.xml/.bin) converted from the ONNX file."""
from medexport.runtimes.openvino.builder import Builder
from medexport.runtimes.openvino.runner import Runner

__all__ = ["Builder", "Runner"]
