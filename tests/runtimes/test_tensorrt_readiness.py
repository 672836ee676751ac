"""The TensorRT readiness check: every model we produce passes; hand-made ONNX files that break each rule class fail,
naming the node and the rule."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from medexport.errors import InputError
from medexport.runtimes.tensorrt.readiness import VERSIONS, check_tensorrt_ready, check_versions


def _save(tmp_path, nodes, inputs, outputs, inits=(), opset=17, name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _x(name="x", dtype=TensorProto.FLOAT, shape=(1, 2, 8, 8)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _rules(path, version="10.3"):
    return {(f.rule, f.node) for f in check_tensorrt_ready(path, version).findings}


def _qdq_conv(tmp_path, *, act_zero=0, weight_axis=0, act_dtype=np.int8, relu_through_qdq=False):
    """x -> Q/DQ -> Conv (int8 per-channel weights) -> [Q/DQ] -> Relu."""
    w = np.random.default_rng(0).integers(-100, 100, (4, 2, 3, 3)).astype(np.int8)
    scales = np.full(w.shape[weight_axis], 0.01, np.float32)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(scales, "w_s"),
             numpy_helper.from_array(np.zeros(w.shape[weight_axis], np.int8), "w_z"),
             numpy_helper.from_array(np.array(0.02, np.float32), "x_s"),
             numpy_helper.from_array(np.array(act_zero, act_dtype), "x_z"),
             numpy_helper.from_array(np.array(0, np.int8), "y_z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"], name="q_in"),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"], name="dq_in"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], name="dq_w", axis=weight_axis),
             helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    if relu_through_qdq:
        nodes += [helper.make_node("QuantizeLinear", ["c", "x_s", "y_z"], ["cq"], name="q_c"),
                  helper.make_node("DequantizeLinear", ["cq", "x_s", "y_z"], ["cd"], name="dq_c"),
                  helper.make_node("Relu", ["cd"], ["y"], name="relu")]
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    return _save(tmp_path, nodes, [_x()], [_x("y", shape=(1, 4, 8, 8))], inits)


def test_a_good_qdq_conv_passes_every_version(tmp_path):
    path = _qdq_conv(tmp_path)
    reports = check_versions(path)
    assert [r.version for r in reports] == list(VERSIONS)
    assert all(r.passed for r in reports), [r.findings for r in reports]


def test_asymmetric_int8_zero_point_is_named(tmp_path):
    assert ("qdq-zero-point", "q_in") in _rules(_qdq_conv(tmp_path, act_zero=3))


def test_uint8_activations_are_refused(tmp_path):
    assert ("qdq-type", "q_in") in _rules(_qdq_conv(tmp_path, act_zero=128, act_dtype=np.uint8))


def test_conv_weights_per_channel_on_the_wrong_axis_are_named(tmp_path):
    assert ("qdq-weight-axis", "conv") in _rules(_qdq_conv(tmp_path, weight_axis=1))


def test_qdq_between_conv_and_relu_blocks_the_fusion(tmp_path):
    assert ("qdq-fusion", "relu") in _rules(_qdq_conv(tmp_path, relu_through_qdq=True))


def test_unsupported_and_custom_operators_are_named(tmp_path):
    nodes = [helper.make_node("Det", ["x"], ["d"], name="det"),
             helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")]
    path = _save(tmp_path, nodes, [_x(shape=(2, 3, 3))], [_x("y", shape=(2, 3, 3)), _x("d", shape=(2,))])
    assert {("operator", "det"), ("operator", "fused")} <= _rules(path)


def test_an_operator_added_later_fails_before_and_passes_after(tmp_path):
    window = numpy_helper.from_array(np.array(16, np.int64), "n")
    path = _save(tmp_path, [helper.make_node("HannWindow", ["n"], ["y"], name="hann")], [],
                 [_x("y", shape=(16,))], [window])
    report = check_tensorrt_ready(path, "10.3")
    assert [(f.rule, f.node) for f in report.findings] == [("operator", "hann")]
    assert "from TensorRT 10.4" in report.findings[0].message
    assert check_tensorrt_ready(path, "10.13").passed


@pytest.mark.parametrize("dtype, name", [(TensorProto.DOUBLE, "DOUBLE"), (TensorProto.STRING, "STRING")])
def test_unsupported_data_types_are_named(tmp_path, dtype, name):
    path = _save(tmp_path, [helper.make_node("Identity", ["x"], ["y"], name="ident")], [_x(dtype=dtype)],
                 [_x("y", dtype=dtype)])
    report = check_tensorrt_ready(path)
    assert ("data-type", "ident") in {(f.rule, f.node) for f in report.findings}
    assert any(name in f.message for f in report.findings)


def test_float64_arithmetic_is_refused(tmp_path):
    path = _save(tmp_path, [helper.make_node("Add", ["x", "x"], ["y"], name="add64")],
                 [_x(dtype=TensorProto.DOUBLE)], [_x("y", dtype=TensorProto.DOUBLE)])
    assert ("data-type", "add64") in _rules(path)


def test_unsupported_attribute_values_are_named(tmp_path):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], name="cubic_up", mode="cubic"),
             helper.make_node("MaxPool", ["r"], ["y"], name="dilated_pool", kernel_shape=[2, 2], dilations=[2, 2])]
    path = _save(tmp_path, nodes, [_x()], [_x("y", shape=(1, 2, 14, 14))], [scales])
    report = check_tensorrt_ready(path)
    assert {("attribute", "cubic_up"), ("attribute", "dilated_pool")} == {(f.rule, f.node) for f in report.findings}
    assert "mode='cubic'" in report.findings[0].message


def test_run_time_axes_need_a_version_that_takes_them(tmp_path):
    starts = numpy_helper.from_array(np.array([0], np.int64), "starts")
    ends = numpy_helper.from_array(np.array([4], np.int64), "ends")
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Slice", ["s", "starts", "ends"], ["axes"], name="axes_of"),  # [1] computed at run time
             helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="slice")]
    path = _save(tmp_path, nodes, [_x()], [_x("y", shape=(1, 2, 8, 8))], [starts, ends])
    assert ("constant-input", "slice") in _rules(path, "10.2")
    assert check_tensorrt_ready(path, "10.3").passed   # 10.3 added tensor axes for Slice


def test_opset_beyond_the_documented_range_is_refused(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="relu")], [_x()], [_x("y")], opset=22)
    assert ("opset", "") in _rules(path, "10.3")
    assert check_tensorrt_ready(path, "10.16").passed


@pytest.mark.parametrize("version", ["9.0", "12", "ten"])
def test_unknown_versions_are_an_input_error(tmp_path, version):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="relu")], [_x()], [_x("y")])
    with pytest.raises(InputError):
        check_tensorrt_ready(path, version)


# ---- every model we produce -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unet2d_variants(tmp_path_factory):
    """The 2D reference model as FP32, FP16, INT8 in each layout, pruned (and its INT8), Tucker-2 and SVD."""
    from medexport.calibration.quantize import QuantConfig, quantize_qdq
    from medexport.compression import get_pass
    from medexport.exporter import export_onnx
    from medexport.exporter.fp16 import to_fp16
    from medexport.zoo import get_model
    from tests.compression.conftest import pass_config

    out = tmp_path_factory.mktemp("variants")
    ref = get_model("brain-tissue-unet2d")
    model, shape, images = ref.build(), tuple(ref.input_shape), ref.calibration()[:8]
    files = {"fp32": export_onnx(model, shape, out / "model.onnx").path}
    files["fp16"] = to_fp16(files["fp32"], out / "model.fp16.onnx")
    for layout in ("tensorrt", "openvino", "ort-u8s8"):
        files[f"int8-{layout}"] = quantize_qdq(files["fp32"], images, out / f"{layout}.qdq.onnx",
                                               QuantConfig(layout=layout)).path
    for method, kwargs in (("prune-l2", {"ratio": 0.5}), ("tucker", {"rank_ratio": 0.25}),
                           ("svd", {"rank_ratio": 0.25})):
        small, _ = get_pass(method).apply(model, shape, pass_config(method, shape, **kwargs))
        files[method] = export_onnx(small, shape, out / f"{method}.onnx").path
    files["prune-l2-int8"] = quantize_qdq(files["prune-l2"], images, out / "prune-l2.qdq.onnx").path
    return files


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8-tensorrt", "prune-l2", "prune-l2-int8", "tucker", "svd"])
def test_every_variant_of_the_2d_reference_model_passes(unet2d_variants, variant):
    for report in check_versions(unet2d_variants[variant]):
        assert report.passed, report.summary()


@pytest.mark.parametrize("layout", ["openvino", "ort-u8s8"])
def test_one_backend_int8_layouts_are_refused_with_the_reason(unet2d_variants, layout):
    report = check_tensorrt_ready(unet2d_variants[f"int8-{layout}"])
    rules = {f.rule for f in report.findings}
    assert "int8-layout" in rules and "qdq-type" in rules
    assert "--int8-layout tensorrt" in report.findings[0].message
    assert any("uint8" in f.message and f.node for f in report.findings if f.rule == "qdq-type")


@pytest.mark.parametrize("name", ["brain-tissue-unet3d", "brain-region-alexnet"])
def test_the_other_reference_models_pass_in_fp32_fp16_and_int8(name, tmp_path):
    from medexport.calibration.quantize import quantize_qdq
    from medexport.exporter import export_onnx
    from medexport.exporter.fp16 import to_fp16
    from medexport.zoo import get_model

    ref = get_model(name)
    fp32 = export_onnx(ref.build(), tuple(ref.input_shape), tmp_path / "model.onnx").path
    files = [fp32, to_fp16(fp32, tmp_path / "model.fp16.onnx"),
             quantize_qdq(fp32, ref.calibration()[:8], tmp_path / "model.int8.qdq.onnx").path]
    for path in files:
        for report in check_versions(path):
            assert report.passed, report.summary()


def test_build_for_tensorrt_without_it_reports_the_check_then_refuses(tmp_path):
    from click.testing import CliRunner

    from medexport.cli import cli
    from medexport.runtimes import get_spec

    if get_spec("tensorrt").available():
        pytest.skip("TensorRT is installed here: the build runs")
    result = CliRunner().invoke(cli, ["build", "--target", "trt", "--no-latency", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert "'tensorrt' package, which is not installed" in line
    assert "model.onnx passes the TensorRT 10.3/10.13/10.16/11 readiness check" in line
    assert not (tmp_path / "out").exists()
