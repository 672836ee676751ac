"""TensorRT adapter. Real builds need `tensorrt` and a GPU, which our CI lacks, so those tests skip there.

The fake-module test below is the one mock in the suite: it stands in for TensorRT (which cannot be
installed here) to check that the adapter picks the right network flags for TensorRT 10 and 11.
"""
import types

import pytest

from medexport.runtimes.tensorrt.util import network_flags


def test_network_flags_by_major_version():
    flag = types.SimpleNamespace(STRONGLY_TYPED=3)
    trt10 = types.SimpleNamespace(__version__="10.13.0", NetworkDefinitionCreationFlag=flag)
    trt11 = types.SimpleNamespace(__version__="11.4.1", NetworkDefinitionCreationFlag=flag)
    assert network_flags(trt10) == 1 << 3  # strongly typed is opt-in in TensorRT 10
    assert network_flags(trt11) == 0       # and the only mode in TensorRT 11


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_and_run_plan(unet_onnx, tmp_path):
    import numpy as np
    import torch

    from medexport.runtimes.tensorrt import Builder, Runner
    from medexport.zoo.samples import real_inputs

    path, model = unet_onnx
    result = Builder(max_batch=4).build(path, tmp_path)
    assert result.artifact.suffix == ".plan" and (tmp_path / "model.plan.json").is_file()
    images = real_inputs((2, 1, 64, 64), 2)
    with Runner(result.artifact) as runner:
        got = runner(images)
    with torch.no_grad():
        want = model(torch.from_numpy(images)).numpy()
    assert np.abs(got - want).max() < 1e-3  # TF32 may be used for FP32 convolutions on Ampere and newer


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_the_registry_builds_and_opens_a_plan_with_the_one_signature(unet_onnx, tmp_path):
    """max_batch sets the profile; device, threads and precision (the ONNX's own) are accepted and not used."""
    from medexport.runtimes import make_builder, open_runner

    path, _ = unet_onnx
    result = make_builder("trt", device="cuda", precision="fp32", max_batch=2).build(path, tmp_path)
    assert result.info["input"]["batch_range"] == [1, 1, 2]
    with open_runner(result.artifact, "trt", device="cuda", threads=4, precision="fp32") as runner:
        assert runner.input_shape == [None, 1, 64, 64]
