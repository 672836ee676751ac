"""Refuse a calibration that would not fit in memory, before onnxruntime fills it and the kernel kills the process.

onnxruntime's calibrators keep every intermediate tensor of every calibration batch until the ranges are computed
(its option to merge min-max ranges batch by batch, ``CalibMaxIntermediateOutputs``, drops the data instead in
onnxruntime 1.32), so memory grows with the number of images: HoVerNet at 256x256 on 32 images was killed on a
24 GiB machine. The estimate sums the float tensors of the graph's inferred shapes for one image.
"""
from __future__ import annotations

from pathlib import Path

from medexport.errors import DataError

HEADROOM = 0.7   # share of the available memory calibration may plan to fill (the session and copies need the rest)


def activation_bytes(onnx_path: Path) -> int | None:
    """Bytes of every float tensor one image makes flow through the graph; None when shapes cannot be inferred."""
    import numpy as np
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path), load_external_data=False))
    except Exception:  # noqa: BLE001 - no estimate, no refusal
        return None
    total = 0
    for info in model.graph.value_info:
        tensor = info.type.tensor_type
        if tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        sizes = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]   # a named dim: batch 1
        total += int(np.prod(sizes, dtype=np.int64)) * (4 if tensor.elem_type == onnx.TensorProto.FLOAT else 2)
    return total


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(onnx_path: Path, n_images: int) -> None:
    """Raise DataError, naming the number of images that would fit, when calibrating ``n_images`` would not."""
    per_image, available = activation_bytes(onnx_path), available_bytes()
    if not per_image or not available or per_image * n_images <= HEADROOM * available:
        return
    fits = int(HEADROOM * available // per_image)
    advice = (f"pass --calib-samples {fits} (and --min-calib {fits} if that is below it)" if fits else
              "not even one image fits: calibrate on a machine with more memory, or export a smaller input shape")
    raise DataError(f"calibrating on {n_images} images would hold about {per_image * n_images / 2**30:.1f} GiB of "
                    f"activations (onnxruntime keeps every intermediate tensor of every image) and "
                    f"{available / 2**30:.1f} GiB is available: {advice}")
