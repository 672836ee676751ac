"""`build` on the MONAI networks users bring, for ONNX Runtime and OpenVINO: FP32 parity on real images."""
import json

import pytest
import torch

from medexport.loading import ModelSpec
from medexport.pipeline import BuildConfig, LatencyConfig, ParityConfig, QuantizationConfig, run_build
from tests._nets import MONAI_NETS

TARGETS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("net", sorted(MONAI_NETS))
def test_build_monai_network(net, target, tmp_path):
    torch.manual_seed(0)
    factory, kwargs, shape = MONAI_NETS[net]
    config = BuildConfig(model=ModelSpec(model=factory, model_kwargs=kwargs, input_shape=shape, name=net), out_dir=tmp_path, target=target, latency=LatencyConfig(enabled=False), parity=ParityConfig(samples=4))
    report = run_build(config).to_dict()
    if target != "onnxruntime":  # for ONNX Runtime, the backend parity below is the ONNX parity
        assert report["onnx_parity"]["max_abs_error"] < 1e-4
    backend = report["backend_parity"]
    assert backend["passed"]
    if target == "onnxruntime":
        assert backend["max_abs_error"] < 1e-4
    else:  # OpenVINO's instance norm differs by ~2e-5 of the output range (see exporter/parity.py)
        assert backend["max_rel_error"] < 1e-4
    assert report["parity_inputs"]["source"].startswith("bundled real")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [int(d) for d in shape.split("x")]
    assert manifest["outputs"][0]["shape"][0] == "batch"
    assert report["profile"]["macs"] > 0


@pytest.mark.parametrize("target", ["onnxruntime", pytest.param("openvino", marks=[pytest.mark.openvino,
                                                                                     pytest.mark.slow])])
def test_fp16_build_is_held_to_the_guard_rails(target, tmp_path):
    report = run_build(BuildConfig(model=ModelSpec(), out_dir=tmp_path, target=target, quantization=QuantizationConfig(precision="fp16"), latency=LatencyConfig(enabled=False))).to_dict()
    assert report["validation"]["guard_rails"]["passed"]
    rows = report["validation"]["guard_rails"]["rows"]
    assert all(abs(r["delta_points"]) < 0.5 for r in rows)   # FP16 barely moves a Dice
    assert "FP16 artifact is judged by the guard rails" in report["backend_parity"]["not_applicable"]
    if target == "onnxruntime":
        assert report["build"]["artifact"] == "model.fp16.onnx"
    elif "16" not in report["build"].get("inference_precision", ""):
        assert "has no FP16 arithmetic" in report["build"]["note"]   # said, not hidden


def test_an_onnx_input_with_external_weights_lists_them_in_the_manifest(tmp_path):
    """The weights file is found from the proto's own location entries, whatever it is called."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 1, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 32, 32])], [weight])
    src = tmp_path / "src"
    src.mkdir()
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src / "conv.onnx"),
                    save_as_external_data=True, location="conv_weights.bin", size_threshold=0)
    run_build(BuildConfig(model=ModelSpec(model=str(src / "conv.onnx")), out_dir=tmp_path / "out", latency=LatencyConfig(enabled=False)))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {"model.onnx", "conv_weights.bin"} <= set(manifest["files"])
