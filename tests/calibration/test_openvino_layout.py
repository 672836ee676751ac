"""The openvino layout takes OpenVINO's int8 paths where NNCF's IR does: max pooling, instance norms, skip Concats.

Checked with OpenVINO's own profiler (``node_times``) on real MONAI networks calibrated on real slices.
"""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from medexport.bench.node_times import INT8, conv_precisions, node_times
from medexport.calibration import _qdq
from medexport.calibration.qdq_check import check_qdq
from medexport.calibration.quantize import QuantConfig, quantize_qdq
from medexport.exporter import export_onnx
from medexport.zoo.samples import real_inputs


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """MONAI's 2D ResNet-10 stem and blocks (conv -> BN -> ReLU -> MaxPool -> residual blocks) at 64 x 64."""
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=3).eval()
    tmp = tmp_path_factory.mktemp("resnet")
    return export_onnx(net, (1, 1, 64, 64), tmp / "model.onnx").path, real_inputs((1, 1, 64, 64), 8), tmp


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_max_pool_reads_the_quantized_input_and_no_number_changes(resnet, monkeypatch):
    fp32, images, tmp = resnet
    moved = quantize_qdq(fp32, images, tmp / "moved.onnx", QuantConfig(layout="openvino")).path
    assert check_qdq(moved) == []
    monkeypatch.setattr(_qdq, "move_qdq_upstream", lambda model: 0)
    kept = quantize_qdq(fp32, images, tmp / "kept.onnx", QuantConfig(layout="openvino")).path
    import onnx

    def pool_io(path):
        nodes = onnx.load(str(path)).graph.node
        producer = {o: n.op_type for n in nodes for o in n.output}
        pool = next(n for n in nodes if n.op_type == "MaxPool")
        return producer[pool.input[0]], {n.op_type for n in nodes if pool.output[0] in n.input}
    assert pool_io(kept) == ("Relu", {"QuantizeLinear"})
    assert pool_io(moved) == ("DequantizeLinear", {"Conv", "Add"})   # the first block and its residual
    np.testing.assert_allclose(_run(moved, images), _run(kept, images), rtol=0, atol=1e-5)   # max commutes with Q


@pytest.mark.openvino
def test_openvino_runs_the_max_pool_in_int8(resnet):
    fp32, images, tmp = resnet
    path = quantize_qdq(fp32, images, tmp / "ov.onnx", QuantConfig(layout="openvino")).path
    rows = node_times(path, "openvino", images[:1], threads=1, runs=2)
    pools = [r for r in rows if r["op_type"] == "MaxPool"]
    assert pools and all(r["precision"] in INT8 for r in pools)
    # only the input's: none after a pool, and the head's (global average pool -> reshape -> Q -> Gemm, moved in
    # front of the reshape) folds into the pool
    assert [r["node"] for r in rows if r["op_type"] == "FakeQuantize"] == ["input_QuantizeLinear"]
    assert all(p in INT8 for p in conv_precisions(rows).values())


@pytest.mark.openvino
def test_instance_norms_and_skip_concats_run_in_int8_on_a_basic_unet(tmp_path):
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(8, 8, 16, 32, 64, 8)).eval()
    fp32 = export_onnx(net, (1, 1, 64, 64), tmp_path / "model.onnx").path
    images = real_inputs((1, 1, 64, 64), 8)
    path = quantize_qdq(fp32, images, tmp_path / "ov.onnx", QuantConfig(layout="openvino")).path
    assert check_qdq(path) == []
    rows = node_times(path, "openvino", images[:1], threads=1, runs=2)
    norms = [r for r in rows if r["op_type"] == "MVN"]
    assert len(norms) == 18 and all(r["precision"] in INT8 for r in norms)
    assert all(p in INT8 for p in conv_precisions(rows).values())
    # no re-quantization: the one FakeQuantize left is the input's
    assert [r["node"] for r in rows if r["op_type"] == "FakeQuantize"] == ["input_QuantizeLinear"]


@pytest.mark.openvino
def test_group_norms_take_int8_from_the_conv_and_keep_their_affine_step_inside(tmp_path):
    """MONAI's SegResNet: GroupNorm exports as Reshape -> InstanceNormalization -> Reshape -> Mul -> Add."""
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    net = SegResNet(spatial_dims=2, in_channels=1, out_channels=2, init_filters=8).eval()
    fp32 = export_onnx(net, (1, 1, 64, 64), tmp_path / "model.onnx").path
    images = real_inputs((1, 1, 64, 64), 8)
    path = quantize_qdq(fp32, images, tmp_path / "ov.onnx", QuantConfig(layout="openvino")).path
    assert check_qdq(path) == []
    rows = node_times(path, "openvino", images[:1], threads=1, runs=2)
    assert not [r for r in rows if r["op_type"] == "Multiply"]            # the norm's scale folded into the MVN
    assert all(r["precision"] in INT8 for r in rows if r["op_type"] == "MVN")
    # no conv writes f32 for a Reorder to copy into a norm: every Reorder between a conv and a norm moves int8
    assert all(r["precision"] in INT8 for r in rows if r["op_type"] == "Reorder" and "norm" in r["node"])
