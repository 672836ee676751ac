"""OpenVINO-only INT8 through NNCF (``--int8-engine nncf``): an alternative to our one QDQ ONNX.

``nncf.quantize`` runs NNCF's default post-training quantization (min-max ranges, fast bias
correction, OpenVINO's own FakeQuantize placement) on the same real calibration images; with
labelled data and ``accuracy_control=True``, ``nncf.quantize_with_accuracy_control`` keeps layers in
float until our validation metric (the worst guard-rail margin against the FP32 model) drops by at
most ``max_drop`` points. The result is an OpenVINO IR, not a QDQ ONNX: it does not go to TensorRT
or ONNX Runtime, which is why the QDQ path stays the default. Example::

    xml = quantize_nncf("out/model.onnx", images, "out/model.int8.nncf.xml")
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medexport.calibration._calib_data import checked_images, images_sha256
from medexport.calibration._graph import OnnxGraph
from medexport.errors import BackendUnavailableError, ExportError, ModelLoadError

NNCF_FILENAME = "model.int8.nncf.xml"


@dataclass
class NncfResult:
    """What ``quantize_nncf`` wrote and from what (the calibration recipe of the manifest)."""

    path: Path
    engine: str
    calibration_images: int
    calibration_sha256: str
    accuracy_control: bool
    max_drop_points: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": self.path.name}


def quantize_nncf(onnx_path: str | Path, calibration: np.ndarray, dest: str | Path, *,
                  metric: Callable[[Any], float] | None = None, validation: list[np.ndarray] | None = None,
                  max_drop_points: float = 1.0) -> NncfResult:
    """Quantize ``onnx_path`` with NNCF for OpenVINO and write the IR pair ``dest`` (.xml) + .bin.

    With ``metric`` (compiled OpenVINO model -> score in points, higher is better) and the
    ``validation`` inputs it scores, NNCF's accuracy control keeps layers float until the score
    drops at most ``max_drop_points``.
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError(f"--int8-engine nncf needs nncf and openvino: pip install nncf openvino "
                                      f"({exc})") from None
    onnx_path, dest = Path(onnx_path), Path(dest)
    if not onnx_path.is_file():
        raise ModelLoadError(f"ONNX file not found: {onnx_path}")
    _, input_shape = OnnxGraph.load(onnx_path).input()
    images = checked_images(calibration, input_shape)
    model = ov.Core().read_model(str(onnx_path))
    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    try:
        if metric is None:
            quantized = nncf.quantize(model, dataset, subset_size=len(images))
        else:
            quantized = nncf.quantize_with_accuracy_control(
                model, dataset, nncf.Dataset(validation or []), validation_fn=_validation_fn(metric),
                max_drop=max_drop_points, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(images))
    except Exception as exc:  # noqa: BLE001 - NNCF raises many unrelated types
        raise ExportError(f"NNCF quantization of {onnx_path.name} failed: {str(exc).splitlines()[0][:200]}") from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".nncf-") as scratch:
        staged = Path(scratch) / dest.name
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), dest.with_suffix(".bin"))   # never an .xml without its .bin
        os.replace(staged, dest)
    return NncfResult(path=dest, engine="nncf", calibration_images=len(images),
                      calibration_sha256=images_sha256(images), accuracy_control=metric is not None,
                      max_drop_points=max_drop_points if metric is not None else None)


def _validation_fn(metric: Callable[[Any], float]):
    """NNCF calls ``fn(compiled_model, validation_items)``; only the compiled model matters to ``metric``."""
    def fn(compiled_model, _items) -> float:
        return float(metric(compiled_model))
    return fn


def overall_metric(data) -> Callable[[Any], float]:
    """Our validation metric for NNCF's accuracy control: the overall metric (points) of a compiled
    OpenVINO model on the labelled ``data`` (a :class:`~medexport.evaluation.validation.LabelledData`)."""
    from medexport.evaluation import evaluate

    def metric(compiled_model) -> float:
        request = compiled_model.create_infer_request()

        def predict(batch: np.ndarray) -> np.ndarray:
            return np.asarray(request.infer({0: batch})[compiled_model.output(0)])

        report, _ = evaluate(predict, data.images, data.labels, task=data.task, classes=list(data.classes),
                             roi_size=data.roi_size, spacing=data.spacing, batch_size=1)
        summary = report.to_dict()
        return 100.0 * summary["overall"][summary["overall_metric"]]["value"]
    return metric
