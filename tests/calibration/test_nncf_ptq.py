"""NNCF's OpenVINO INT8 path: an IR pair that segments like FP32; accuracy control on our metric."""
import numpy as np
import pytest

from medexport.calibration.nncf_ptq import overall_metric, quantize_nncf
from medexport.errors import DataError, InputError
from medexport.evaluation.validation import LabelledData, reference_data
from medexport.zoo import get_model

pytestmark = pytest.mark.openvino


@pytest.fixture(scope="module")
def ref():
    return get_model("brain-tissue-unet2d")


@pytest.fixture(scope="module")
def fp32(ref, tmp_path_factory):
    from medexport.exporter import export_onnx

    return export_onnx(ref.build(), ref.input_shape, tmp_path_factory.mktemp("fp32") / "model.onnx").path


def _segment(path, x):
    from medexport.runtimes.openvino import Runner

    with Runner(path, precision="int8") as runner:
        return runner.infer(x).argmax(1)


def test_default_ptq_writes_an_ir_pair_that_segments_like_fp32(ref, fp32, tmp_path):
    result = quantize_nncf(fp32, ref.calibration()[:16], tmp_path / "model.int8.nncf.xml")
    assert result.path.is_file() and result.path.with_suffix(".bin").is_file()
    assert result.calibration_images == 16 and not result.accuracy_control
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no scratch left
    x = ref.heldout()[0][:8]
    assert (_segment(fp32, x) == _segment(result.path, x)).mean() > 0.98


def test_wrong_shape_calibration_is_a_data_error(fp32, tmp_path):
    with pytest.raises(DataError, match="do not match the model input"):
        quantize_nncf(fp32, np.zeros((4, 1, 64, 64), np.float32), tmp_path / "q.xml")
    assert not (tmp_path / "q.xml").exists()


@pytest.mark.slow
def test_accuracy_control_is_driven_by_our_metric(ref, fp32, tmp_path):
    data = reference_data(ref)
    small = LabelledData(data.images[::3], data.labels[::3], data.task, data.classes, "every 3rd", spacing=data.spacing)
    metric = overall_metric(small)
    result = quantize_nncf(fp32, ref.calibration()[:16], tmp_path / "q.xml", metric=metric,
                           validation=list(small.images[:1]), max_drop_points=0.5)
    assert result.accuracy_control and result.max_drop_points == 0.5
    import openvino as ov

    core = ov.Core()
    score = metric(core.compile_model(str(result.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
    assert score > metric(core.compile_model(str(fp32), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})) - 0.5
    assert 80.0 < score < 100.0


def test_nncf_engine_is_openvino_only():
    from medexport.loading import ModelSpec
    from medexport.pipeline import BuildConfig, QuantizationConfig

    with pytest.raises(InputError, match="use it with --target openvino"):
        BuildConfig(model=ModelSpec(), out_dir="x", quantization=QuantizationConfig(precision="int8", engine="nncf"))
