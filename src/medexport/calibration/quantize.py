"""INT8 calibration's public names: one QDQ ONNX (``quantize_qdq``), or the most-quantized one that holds the
guard rails (``quantize_with_guard_rails``), configured by ``QuantConfig``.

The QDQ emission lives in ``_qdq`` and the sensitivity analysis in ``_sensitivity``, which builds on it; this
module only gathers them, so neither imports the other through here. Example::

    from medexport.calibration.quantize import QuantConfig, quantize_qdq, quantize_with_guard_rails

    result = quantize_qdq("out/model.onnx", images, "out/model.int8.qdq.onnx", QuantConfig(method="percentile"))
"""
from medexport.calibration._qdq import QDQ_FILENAME, QUANTIZED_OPS, QuantConfig, QuantResult, quantize_qdq
from medexport.calibration._sensitivity import MixedPrecisionResult, quantize_with_guard_rails

__all__ = ["QDQ_FILENAME", "QUANTIZED_OPS", "MixedPrecisionResult", "QuantConfig", "QuantResult", "quantize_qdq",
           "quantize_with_guard_rails"]
