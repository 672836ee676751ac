"""Per-node profiles: real OpenVINO / ONNX Runtime profilers on a real QDQ model with a planted float conv."""
import numpy as np
import pytest
import torch

from medexport.bench.node_times import INT8, compare, conv_precisions, layer_name, node_times
from medexport.calibration.quantize import QuantConfig, quantize_qdq
from medexport.errors import InputError
from medexport.exporter import export_onnx
from medexport.zoo.samples import real_inputs

PLANTED = "/2/Conv"   # the middle conv, kept in float in the "planted" model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same three-conv net quantized twice on real slices: every conv int8, and with PLANTED left in float."""
    tmp = tmp_path_factory.mktemp("profile")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 2, 1))
    fp32 = export_onnx(net, (1, 1, 32, 32), tmp / "model.onnx").path
    images = real_inputs((1, 1, 32, 32), 8)

    def quantize(layout: str, planted: bool):
        config = QuantConfig(layout=layout, nodes_to_exclude=(PLANTED,) if planted else ())
        return quantize_qdq(fp32, images, tmp / f"{layout}{'.planted' if planted else ''}.onnx", config).path
    return quantize, images[:1]


@pytest.mark.openvino
def test_openvino_profile_finds_the_planted_float_conv(models):
    quantize, image = models
    full = node_times(quantize("openvino", False), "openvino", image, threads=1, runs=3)
    planted = node_times(quantize("openvino", True), "openvino", image, threads=1, runs=3)
    assert set(full[0]) == {"node", "op_type", "precision", "ms"}
    assert all(r["ms"] >= 0 for r in full) and sum(r["ms"] for r in full) > 0
    assert sorted(conv_precisions(full)) == ["/0/Conv", "/2/Conv", "/4/Conv"]
    assert all(p in INT8 for p in conv_precisions(full).values())
    assert conv_precisions(planted)[PLANTED] == "FP32"
    diff = compare(planted, full)
    assert diff.float_in_a == [PLANTED] and diff.float_in_b == []
    assert compare(full, planted).float_in_b == [PLANTED]
    assert "Convolution" in diff.op_ms and f"float in ours, int8 in NNCF: {PLANTED}" in diff.markdown()


def test_onnxruntime_profile_finds_the_planted_float_conv(models):
    """onnxruntime fuses DQ -> Conv -> Q into QLinearConv only in its own layout (Q/DQ around every op); the conv
    before the planted one loses its output Q too (its only reader is float), so it runs in float as well."""
    quantize, image = models
    full = node_times(quantize("ort-u8s8", False), "onnxruntime", image, threads=1, runs=3)
    planted = node_times(quantize("ort-u8s8", True), "onnxruntime", image, threads=1, runs=3)
    assert {r["op_type"] for r in full} >= {"QLinearConv"}
    assert conv_precisions(planted)[PLANTED] == "FP32" and conv_precisions(full)[PLANTED] in INT8
    assert compare(planted, full).float_in_a == ["/0/Conv", PLANTED]


def test_layer_names_and_bad_arguments(tmp_path):
    assert layer_name("/0/Conv/WithoutBiases") == "/0/Conv" == layer_name("/0/Conv_token_3")
    assert layer_name("/2/Conv_output_0_nchwc") == "/2/Conv"
    with pytest.raises(InputError, match="unknown target 'tensorrt'"):
        node_times(tmp_path / "m.onnx", "tensorrt", np.zeros((1, 1, 4, 4)))
