"""FP16 ONNX: float16 weights, float32 inputs/outputs, the same segmentation as FP32 on real images."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from medexport.errors import ModelLoadError
from medexport.exporter.fp16 import to_fp16
from medexport.zoo import get_model


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    from medexport.exporter import export_onnx

    ref = get_model("brain-tissue-unet2d")
    return export_onnx(ref.build(), ref.input_shape, tmp_path_factory.mktemp("fp32") / "model.onnx").path


def test_fp16_keeps_float32_io_and_segments_like_fp32(fp32, tmp_path):
    path = to_fp16(fp32, tmp_path / "model.fp16.onnx")
    model = onnx.load(str(path))
    weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = get_model("brain-tissue-unet2d").heldout()[0][:4]
    a = ort.InferenceSession(str(fp32)).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    assert b.dtype == np.float32 and np.abs(a - b).max() < 1e-2 * np.abs(a).max()
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.999
    assert path.stat().st_size < 0.6 * fp32.stat().st_size
    onnx.checker.check_model(str(path), full_check=True)   # nodes in topological order, as ONNX requires


def test_missing_file_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        to_fp16(tmp_path / "nope.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
