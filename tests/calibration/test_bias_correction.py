"""Fast bias correction on the trained zoo classifier, real calibration and held-out images."""
import numpy as np
import onnxruntime as ort
import pytest

from medexport.calibration.qdq_check import check_qdq
from medexport.calibration.quantize import QuantConfig, quantize_qdq
from medexport.zoo import get_model


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory):
    from medexport.exporter import export_onnx

    ref = get_model("brain-region-alexnet")
    tmp = tmp_path_factory.mktemp("alexnet")
    return ref, export_onnx(ref.build(), ref.input_shape, tmp / "model.onnx").path, tmp


def _logits(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_bias_correction_removes_the_mean_logit_shift(alexnet):
    """Default layout (the correction does not depend on it; the openvino layout measured alike)."""
    ref, fp32, tmp = alexnet
    layout = "tensorrt"
    images, (heldout, _) = ref.calibration(), ref.heldout()
    plain = quantize_qdq(fp32, images, tmp / f"{layout}.plain.onnx", QuantConfig(layout=layout, bias_correction=False))
    fixed = quantize_qdq(fp32, images, tmp / f"{layout}.fixed.onnx", QuantConfig(layout=layout))
    assert fixed.config["bias_correction"] is True and check_qdq(fixed.path) == []
    reference = _logits(fp32, heldout)
    # the mean per-class logit error on images calibration never saw: a systematic shift the biases now undo
    before = np.abs((_logits(plain.path, heldout) - reference).mean(axis=0)).mean()
    after = np.abs((_logits(fixed.path, heldout) - reference).mean(axis=0)).mean()
    assert after < 0.7 * before, (before, after)   # measured: 0.62 -> 0.34 (TensorRT layout)
