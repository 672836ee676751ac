"""check_qdq passes the models medexport emits and catches models that break a TensorRT rule."""
import numpy as np
import onnx
import pytest

from medexport.calibration.qdq_check import check_qdq
from medexport.calibration.quantize import QUANTIZED_OPS, QuantConfig, quantize_qdq
from medexport.zoo import get_model


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    from medexport.exporter import export_onnx

    ref = get_model("brain-tissue-unet2d")
    return export_onnx(ref.build(), ref.input_shape, tmp_path_factory.mktemp("fp32") / "model.onnx").path


@pytest.fixture(scope="module")
def images():
    return get_model("brain-tissue-unet2d").calibration()[:16]


def _ort_quantize(fp32, images, dest, **kwargs):
    """A QDQ model made by plain onnxruntime, laid out as ours, with some rule broken on purpose."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from medexport.calibration._calib_data import batch_reader
    from medexport.calibration._graph import OnnxGraph

    deconv_axis0 = {n.input[1]: [{"axis": 0}] for n in OnnxGraph.load(fp32).nodes if n.op_type == "ConvTranspose"}
    options = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
               "QDQDisableWeightAdjustForInt32Bias": True, "TensorQuantOverrides": deconv_axis0,
               "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS)}
    options.update(kwargs.pop("extra_options", {}))
    args = {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
            "op_types_to_quantize": list(QUANTIZED_OPS),
            "per_channel": True, "calibrate_method": CalibrationMethod.MinMax, "extra_options": options, **kwargs}
    quantize_static(str(fp32), str(dest), batch_reader(images, "input", 8), **args)
    return dest


def test_models_we_emit_pass(fp32, images, tmp_path):
    assert check_qdq(quantize_qdq(fp32, images, tmp_path / "q.onnx").path) == []


def test_a_float_model_is_not_a_qdq_model(fp32):
    assert check_qdq(fp32) == ["the model has no QuantizeLinear/DequantizeLinear nodes: it is not a QDQ model"]


def test_asymmetric_uint8_activations_are_caught(fp32, images, tmp_path):
    from onnxruntime.quantization import QuantType

    path = _ort_quantize(fp32, images, tmp_path / "asym.onnx", activation_type=QuantType.QUInt8,
                         extra_options={"ActivationSymmetric": False})
    problems = check_qdq(path)
    # every quantized activation here is an image in [0, 1] or a ReLU output: uint8 zero points are 0
    assert problems and all("type uint8; TensorRT needs int8" in p for p in problems)


def test_asymmetric_int8_activations_are_caught(fp32, images, tmp_path):
    path = _ort_quantize(fp32, images, tmp_path / "asym8.onnx", extra_options={"ActivationSymmetric": False})
    problems = check_qdq(path)
    assert problems and all("asymmetric" in p for p in problems)


def test_int32_bias_and_output_axis_conv_transpose_are_caught(fp32, images, tmp_path):
    # onnxruntime's defaults: int32 bias DQ, ConvTranspose weights per-channel on axis 1
    path = _ort_quantize(fp32, images, tmp_path / "ort_default.onnx",
                         extra_options={"QuantizeBias": True, "QDQDisableWeightAdjustForInt32Bias": False,
                                        "TensorQuantOverrides": {}})
    problems = check_qdq(path)
    assert sum("int32 DequantizeLinear" in p for p in problems) == 7           # one per Conv/ConvTranspose bias
    assert sum("per-channel on axis 1; TensorRT's deconvolution" in p for p in problems) == 3


def test_per_tensor_conv_weights_are_caught(fp32, images, tmp_path):
    path = _ort_quantize(fp32, images, tmp_path / "per_tensor.onnx", per_channel=False)
    problems = check_qdq(path)
    assert sum("weights quantized per-tensor" in p for p in problems) == 4      # the 4 Convs
    assert not any("ConvTranspose" in p for p in problems)                      # per-tensor is fine there


def test_qdq_between_a_conv_and_its_relu_is_caught(fp32, images, tmp_path):
    # onnxruntime's default placement: Q/DQ on every conv output and every ReLU input
    path = _ort_quantize(fp32, images, tmp_path / "unfused.onnx", op_types_to_quantize=None,
                         extra_options={"OpTypesToExcludeOutputQuantization": []})
    problems = check_qdq(path)
    assert sum("blocks the layer + activation fusion" in p for p in problems) == 6   # 4 Conv + 2 ConvTranspose -> ReLU
    assert all("fusion" in p for p in problems)


def test_a_conv_left_float_without_saying_so_is_caught(fp32, images, tmp_path):
    head = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"][-1]
    path = _ort_quantize(fp32, images, tmp_path / "silent.onnx", nodes_to_exclude=[head])
    problems = check_qdq(path)
    assert problems and all(head in p for p in problems)
    assert any("weight" in p and "not fed by a DequantizeLinear" in p for p in problems)
    assert check_qdq(path, float_nodes=[head]) == []


def test_non_positive_scales_are_caught(fp32, images, tmp_path):
    model = onnx.load(str(quantize_qdq(fp32, images, tmp_path / "q.onnx").path))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear")
    init = next(i for i in model.graph.initializer if i.name == dq.input[1])
    init.CopyFrom(onnx.numpy_helper.from_array(-np.abs(onnx.numpy_helper.to_array(init)), init.name))
    onnx.save(model, str(tmp_path / "neg.onnx"))
    assert any("finite and positive" in p for p in check_qdq(tmp_path / "neg.onnx"))


def _activation_types(path) -> dict:
    model = onnx.load(str(path))
    zero_type = {i.name: onnx.numpy_helper.to_array(i).dtype for i in model.graph.initializer}
    return {q.input[0]: zero_type[q.input[2]] for q in model.graph.node if q.op_type == "QuantizeLinear"
            and q.input[0] not in zero_type}


def test_openvino_layout_passes_its_own_profile_only(fp32, images, tmp_path):
    assert images.min() == 0.0   # intensities scaled to [0, 1]
    path = quantize_qdq(fp32, images, tmp_path / "ov.onnx", QuantConfig(layout="openvino")).path
    assert check_qdq(path) == []                                   # the profile comes from the metadata
    activations = _activation_types(path)
    # 6 ReLU outputs and the input, which no calibration image takes below 0; the 3 Concats of one scale keep no
    # Q/DQ pair on their outputs (it would change no number; OpenVINO would run it as a FakeQuantize)
    assert len(activations) == 7 and set(activations.values()) == {np.dtype(np.uint8)}
    assert not any(name.startswith("/model") and "Concat" in name for name in activations)
    as_trt = check_qdq(path, profile="tensorrt")
    uint8 = [p for p in as_trt if "type uint8; TensorRT needs int8" in p]
    model = onnx.load(str(path))
    weights = {i.name for i in model.graph.initializer}
    activation_qdq = [n for n in model.graph.node if n.op_type.endswith("Linear") and n.input[0] not in weights]
    assert len(uint8) == len(activation_qdq)                       # every activation Q/DQ, no weight DQ
    float_layers = [p for p in as_trt if p not in uint8]           # TensorRT wants the pair after each Concat
    assert len(float_layers) == 3 and all("Concat" in p and "not fed by a DequantizeLinear" in p for p in float_layers)

    shifted = quantize_qdq(fp32, images - 0.1, tmp_path / "ov_neg.onnx", QuantConfig(layout="openvino")).path
    assert check_qdq(shifted) == []
    assert _activation_types(shifted)["input"] == np.int8         # an input seen below 0 stays signed


def test_uint8_on_a_signed_tensor_and_axis0_deconvs_are_caught_in_the_openvino_profile(fp32, images, tmp_path):
    from onnxruntime.quantization import QuantType

    path = _ort_quantize(fp32, images, tmp_path / "asym.onnx", activation_type=QuantType.QUInt8,
                         extra_options={"ActivationSymmetric": False})
    problems = check_qdq(path, profile="openvino")
    # the input image is in [0, 1] here, but nothing in the graph proves it: uint8 would clip a negative input
    negative = [p for p in problems if "which can be negative" in p]
    assert len(negative) == 2 and all("'input" in p for p in negative)                   # its Q and DQ
    assert sum("OpenVINO runs a deconvolution in int8 only" in p for p in problems) == 3    # axis-0 ConvTranspose
    assert len(problems) == 5                                       # the ReLU outputs are fine as uint8
