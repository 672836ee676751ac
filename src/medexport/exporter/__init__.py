"""torch -> ONNX export, simplification, checking and numerical parity."""
from medexport.exporter.onnx_export import OPSET, ExportResult, check_onnx, export_onnx
from medexport.exporter.parity import ParityResult, compare_outputs

__all__ = ["OPSET", "ExportResult", "check_onnx", "export_onnx", "ParityResult", "compare_outputs"]
