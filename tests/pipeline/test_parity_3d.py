"""3D instance-norm networks through the pipeline: float noise passes, a broken graph fails at its node."""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import medexport.pipeline._stages as stages
from medexport.errors import ParityError
from medexport.loading import ModelSpec
from medexport.pipeline import (BuildConfig, DataConfig, LatencyConfig, ParityConfig, QuantizationConfig, run_build,
                                run_export)
from medexport.zoo.samples import real_inputs

BASICUNET = ("monai.networks.nets:BasicUNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                               "features": [8, 8, 16, 32, 64, 8]})


def config(tmp_path, size=32, samples=2, **kw):
    factory, kwargs = BASICUNET
    spec = ModelSpec(model=factory, model_kwargs=kwargs, input_shape=f"1x1x{size}x{size}x{size}", name="basicunet3d")
    return BuildConfig(model=spec, out_dir=tmp_path / "out", latency=LatencyConfig(enabled=False),
                       parity=ParityConfig(samples=samples), **kw)


@pytest.mark.slow
def test_basicunet_3d_at_64_passes_export_on_float_noise_the_fp32_rule_refused(tmp_path):
    torch.manual_seed(0)
    parity = run_export(config(tmp_path, size=64, samples=8))["parity"]
    assert parity["passed"] and parity["reference"] == "float64"
    assert parity["max_abs_error"] > parity["tolerance"] + parity["rtol"] * parity["output_range"]  # old verdict
    assert parity["torch_error"] < 1e-5 and parity["max_abs_error"] < parity["allowed_error"]
    assert parity["decisions"]["agreement"] > 0.9999


@pytest.mark.slow   # about a minute on two shared cores: 3D calibration and quantization
def test_int8_build_of_basicunet_3d_checks_the_onnx_against_float64_with_decisions(tmp_path):
    torch.manual_seed(0)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, image in enumerate(real_inputs((1, 1, 32, 32, 32), 3)):
        np.save(calib / f"scan{i}.npy", image[0])
    report = run_build(config(tmp_path, data=DataConfig(calib=str(calib), calib_samples=3),
                              quantization=QuantizationConfig(precision="int8"))).to_dict()
    onnx_parity = report["onnx_parity"]
    assert onnx_parity["passed"] and onnx_parity["reference"] == "float64"
    assert 0 < onnx_parity["torch_error"] < 1e-5 and onnx_parity["max_abs_error"] < onnx_parity["allowed_error"]
    decisions = onnx_parity["decisions"]
    assert decisions["kind"] == "segmentation" and decisions["total"] == 2 * 32 ** 3
    assert decisions["agreement"] > 0.999 and min(decisions["dice"].values()) > 0.99
    assert report["build"]["artifact"] == "model.int8.qdq.onnx"


def test_a_changed_weight_fails_export_naming_the_first_diverging_node(tmp_path, monkeypatch):
    real_export = stages.export

    def export_then_break(ctx, onnx_path):   # the exporter gets one weight of the last decoder block wrong
        info = real_export(ctx, onnx_path)
        proto = onnx.load(str(onnx_path))
        weight = next(t for t in proto.graph.initializer if t.name == "upcat_4.convs.conv_0.conv.weight")
        values = numpy_helper.to_array(weight).copy()
        values.flat[:4] += 0.5
        weight.CopyFrom(numpy_helper.from_array(values, weight.name))
        onnx.save(proto, str(onnx_path))
        return info

    monkeypatch.setattr(stages, "export", export_then_break)
    torch.manual_seed(0)
    with pytest.raises(ParityError, match=r"argmax agreement .*first diverging node /upcat_4/convs/conv_0/conv/Conv "
                                          r"\(Conv, torch module upcat_4.convs.conv_0.conv\).*report a bug"):
        run_export(config(tmp_path))
    assert not (tmp_path / "out" / "model.onnx").exists()
