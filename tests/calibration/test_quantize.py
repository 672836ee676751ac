"""quantize_qdq on the trained 2D reference U-Net with its own calibration slices: rules, accuracy, errors."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from medexport.calibration._graph import FLOAT_NODES_KEY
from medexport.calibration.qdq_check import check_qdq
from medexport.calibration.quantize import QuantConfig, quantize_qdq, quantize_with_guard_rails
from medexport.errors import DataError, GuardRailError, InputError
from medexport.evaluation.guardrails import GuardRails
from medexport.evaluation.validation import LabelledData, reference_data
from medexport.zoo import get_model

MODEL = "brain-tissue-unet2d"


@pytest.fixture(scope="module")
def ref():
    return get_model(MODEL)


@pytest.fixture(scope="module")
def fp32(ref, tmp_path_factory):
    from medexport.exporter import export_onnx

    return export_onnx(ref.build(), ref.input_shape, tmp_path_factory.mktemp("fp32") / "model.onnx").path


@pytest.fixture(scope="module")
def images(ref):
    return ref.calibration()[:16]


def _argmax_agreement(a_path, b_path, x) -> float:
    a = ort.InferenceSession(str(a_path)).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(b_path)).run(None, {"input": x})[0]
    return float((a.argmax(1) == b.argmax(1)).mean())


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_each_method_emits_a_rule_abiding_qdq_model_that_segments_like_fp32(fp32, images, ref, tmp_path, method):
    result = quantize_qdq(fp32, images, tmp_path / "model.int8.qdq.onnx", QuantConfig(method=method))
    assert check_qdq(result.path) == []
    assert result.method == method and result.calibration_images == 16
    assert result.quantized_nodes == 10            # 4 Conv + 3 ConvTranspose + 3 skip Concats
    x = ref.heldout()[0][:8]
    assert _argmax_agreement(fp32, result.path, x) > 0.98
    assert not list(tmp_path.glob("*.part"))


def test_weights_are_int8_per_channel_and_biases_float_deconvs_per_tensor(fp32, images, tmp_path):
    path = quantize_qdq(fp32, images, tmp_path / "q.onnx").path
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    for node in convs:
        dq = producer[node.input[1]]
        assert inits[dq.input[0]].dtype == np.int8
        if node.op_type == "Conv":
            assert next(a.i for a in dq.attribute if a.name == "axis") == 0
            assert inits[dq.input[1]].shape == (inits[dq.input[0]].shape[0],)
        else:   # the one ConvTranspose layout TensorRT and OpenVINO both run in int8
            assert inits[dq.input[1]].size == 1
        assert node.input[2] in inits and inits[node.input[2]].dtype == np.float32   # bias stays float
    assert all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any()
               for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))


def test_result_records_the_recipe(fp32, images, tmp_path):
    a = quantize_qdq(fp32, images, tmp_path / "a.onnx")
    b = quantize_qdq(fp32, images[:8], tmp_path / "b.onnx")
    assert len(a.calibration_sha256) == 64 and a.calibration_sha256 != b.calibration_sha256
    assert a.to_dict()["path"] == "a.onnx" and a.to_dict()["config"]["method"] == "minmax"


def test_excluded_nodes_stay_float_and_are_recorded(fp32, images, tmp_path):
    head = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type in ("Conv", "ConvTranspose")][-1]
    all_q = quantize_qdq(fp32, images, tmp_path / "all.onnx")
    result = quantize_qdq(fp32, images, tmp_path / "mixed.onnx", QuantConfig(nodes_to_exclude=(head,)))
    assert result.excluded_nodes == [head] and result.quantized_nodes == all_q.quantized_nodes - 2
    model = onnx.load(str(result.path))
    producer = {o: n for n in model.graph.node for o in n.output}
    # walk back from the head to the layers that feed it: no Q/DQ anywhere on the way, weights included
    glue, todo = [], [next(n for n in model.graph.node if n.name == head)]
    while todo:
        node = todo.pop()
        for name in node.input:
            src = producer.get(name)
            assert src is None or src.op_type not in ("QuantizeLinear", "DequantizeLinear"), (node.name, name)
            if src is not None and src.op_type not in ("Conv", "ConvTranspose"):
                glue.append(src.name)
                todo.append(src)
    assert result.glue_float_nodes == [n for n in glue if n.endswith("Concat")] and len(result.glue_float_nodes) == 1
    assert json.loads({p.key: p.value for p in model.metadata_props}[FLOAT_NODES_KEY]) == [head, *result.glue_float_nodes]
    assert check_qdq(result.path) == []                           # excluded on purpose, recorded


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 1, 128, 128), np.float32), "no calibration images"),
    (np.zeros((4, 1, 64, 64), np.float32), "do not match the model input"),
    (np.zeros((4, 128, 128), np.float32), "do not match the model input"),
])
def test_missing_or_wrong_shape_images_are_data_errors(fp32, tmp_path, bad, message):
    with pytest.raises(DataError, match=message):
        quantize_qdq(fp32, bad, tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_nan_images_are_a_data_error(fp32, images, tmp_path):
    bad = images.copy()
    bad[3, 0, 10, 10] = np.nan
    with pytest.raises(DataError, match="1 of 16 calibration images contain NaN"):
        quantize_qdq(fp32, bad, tmp_path / "q.onnx")


def test_config_and_node_names_are_validated(fp32, images, tmp_path):
    with pytest.raises(InputError, match="unknown calibration method"):
        QuantConfig(method="kl")
    with pytest.raises(InputError, match="percentile"):
        QuantConfig(method="percentile", percentile=20)
    with pytest.raises(InputError, match="not in model.onnx: nope"):
        quantize_qdq(fp32, images, tmp_path / "q.onnx", QuantConfig(nodes_to_exclude=("nope",)))


@pytest.fixture(scope="module")
def small_heldout(ref):
    data = reference_data(ref)
    return LabelledData(data.images[::4], data.labels[::4], data.task, data.classes, "every 4th held-out slice",
                        spacing=data.spacing)


def test_guard_rails_that_hold_keep_everything_int8(fp32, images, small_heldout, tmp_path):
    result = quantize_with_guard_rails(fp32, images, tmp_path / "model.int8.qdq.onnx", small_heldout,
                                       GuardRails(1.0, 3.0))
    assert result.validation["guard_rails"]["passed"] and result.float_layers == []
    assert result.quant.path == tmp_path / "model.int8.qdq.onnx" and result.quant.path.is_file()
    rows = result.validation["guard_rails"]["rows"]
    assert {r["name"] for r in rows} >= {"grey_matter", "white_matter"}
    assert all(abs(r["delta_points"]) < 3.0 for r in rows)
    assert [p.name for p in tmp_path.iterdir()] == ["model.int8.qdq.onnx"]   # scratch files gone


def test_a_broken_rail_with_no_float_budget_fails_without_writing(fp32, images, small_heldout, tmp_path):
    # clipping activations at their 90th percentile wrecks the segmentation (white matter Dice -> ~0)
    config = QuantConfig(method="percentile", percentile=90.0)
    with pytest.raises(GuardRailError, match="white_matter.*max_float_layers=0"):
        quantize_with_guard_rails(fp32, images, tmp_path / "q.onnx", small_heldout, GuardRails(1.0, 3.0), config,
                                  max_float_layers=0)
    assert list(tmp_path.iterdir()) == []


def test_ort_u8s8_layout_is_checked_as_onnxruntime_only(fp32, images, ref, tmp_path):
    result = quantize_qdq(fp32, images, tmp_path / "u8.onnx", QuantConfig(layout="ort-u8s8"))
    assert check_qdq(result.path) == []                    # its own profile, read from the metadata
    as_trt = check_qdq(result.path, profile="tensorrt")     # ... but TensorRT would reject it
    assert as_trt and all("TensorRT needs int8" in p or "asymmetric" in p for p in as_trt)
    assert _argmax_agreement(fp32, result.path, ref.heldout()[0][:8]) > 0.98
    with pytest.raises(InputError, match="unknown QDQ layout"):
        QuantConfig(layout="u8")


def test_u8s8_is_refused_for_targets_other_than_onnxruntime():
    from medexport.loading import ModelSpec
    from medexport.pipeline import BuildConfig, QuantizationConfig

    with pytest.raises(InputError, match="serves onnxruntime only, not openvino: use it with --target onnxruntime"):
        BuildConfig(model=ModelSpec(), out_dir="x", target="openvino", quantization=QuantizationConfig(precision="int8", layout="ort-u8s8"))


def test_each_skip_concat_has_one_scale(fp32, images, tmp_path):
    model = onnx.load(str(quantize_qdq(fp32, images, tmp_path / "q.onnx").path))
    inits = {i.name: float(onnx.numpy_helper.to_array(i)) for i in model.graph.initializer if not i.dims}
    producer = {o: n for n in model.graph.node for o in n.output}
    readers = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    concats = [n for n in model.graph.node if n.op_type == "Concat"]
    assert len(concats) == 3
    for concat in concats:
        scales = {inits[producer[i].input[1]] for i in concat.input}                       # input DQs
        scales |= {inits[q.input[1]] for q in readers[concat.output[0]] if q.op_type == "QuantizeLinear"}
        assert len(scales) == 1, (concat.name, scales)


def test_openvino_layout_is_openvino_only_and_its_default():
    from medexport.loading import ModelSpec
    from medexport.pipeline import BuildConfig, QuantizationConfig

    for target in ("onnxruntime", "tensorrt"):
        with pytest.raises(InputError, match="serves openvino only, not .*: use it with --target openvino"):
            BuildConfig(model=ModelSpec(), out_dir="x", target=target, quantization=QuantizationConfig(precision="int8", layout="openvino"))
        assert BuildConfig(model=ModelSpec(), out_dir="x", target=target, quantization=QuantizationConfig(precision="int8")).int8_layout == "tensorrt"
    assert BuildConfig(model=ModelSpec(), out_dir="x", target="openvino", quantization=QuantizationConfig(precision="int8")).int8_layout == "openvino"


def test_a_calibration_that_would_not_fit_in_memory_is_refused_with_the_count_that_fits(fp32, images, tmp_path,
                                                                                         monkeypatch):
    from medexport.calibration import _memory

    per_image = _memory.activation_bytes(fp32)
    assert 4 * 2**20 < per_image < 8 * 2**20   # the 2D reference U-Net's tensors at 128x128, float32
    monkeypatch.setattr(_memory, "available_bytes", lambda: int(10.5 * per_image / _memory.HEADROOM))
    with pytest.raises(DataError, match=r"--calib-samples 10 .*"):
        quantize_qdq(fp32, images, tmp_path / "q.onnx")   # 16 images
    assert not (tmp_path / "q.onnx").exists()
    quantize_qdq(fp32, images[:10], tmp_path / "q.onnx")   # ten fit
