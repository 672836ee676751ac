"""FP32 ONNX -> FP16 ONNX (``model.fp16.onnx``) for ONNX Runtime and TensorRT (``--precision fp16``).

Weights and activations become float16 while the graph keeps float32 inputs and outputs
(``keep_io_types``), so callers feed and read the same arrays as the FP32 model. The conversion is
onnxruntime's (``onnxruntime.transformers.float16``). TensorRT builds the file strongly typed, in
FP16 as written, since TensorRT 11 dropped the FP16 builder flag. OpenVINO does not need it: its IR
is compressed to FP16 and the inference precision hint asks for f16 (see the OpenVINO builder).
Example::

    to_fp16("out/model.onnx", "out/model.fp16.onnx")
"""
from __future__ import annotations

from pathlib import Path

from medexport._io import atomic_path
from medexport.errors import ExportError, ModelLoadError

FP16_FILENAME = "model.fp16.onnx"


def to_fp16(onnx_path: str | Path, dest: str | Path) -> Path:
    """Write the FP16 copy of ``onnx_path`` to ``dest`` (atomically) and return ``dest``."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    onnx_path, dest = Path(onnx_path), Path(dest)
    if not onnx_path.is_file():
        raise ModelLoadError(f"ONNX file not found: {onnx_path}")
    try:
        model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
        OnnxModel(model).topological_sort()   # the converter appends the input casts last; ONNX wants them first
    except Exception as exc:  # noqa: BLE001 - the converter raises several unrelated types
        raise ExportError(f"FP16 conversion of {onnx_path.name} failed: {str(exc).splitlines()[0][:200]}") from exc
    with atomic_path(dest) as tmp:
        onnx.save(model, str(tmp))
    return dest
