"""OpenVINO builder/runner on the CPU: IR written, FP32 kept, parity with torch on real images."""
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.openvino


def test_build_ir_and_match_torch(unet_onnx, tmp_path):
    from medexport.runtimes.openvino import Builder, Runner
    from medexport.zoo.samples import real_inputs

    path, model = unet_onnx
    result = Builder().build(path, tmp_path)
    assert {f.name for f in result.files} == {"model.xml", "model.bin"}
    assert result.info["devices"] == ["CPU"]
    assert result.info["inference_precision"] == "f32"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left behind
    images = real_inputs((3, 1, 64, 64), 3)
    with Runner(result.artifact) as runner:
        assert runner.input_shape == [None, 1, 64, 64]
        got = runner(images)
    with torch.no_grad():
        want = model(torch.from_numpy(images)).numpy()
    assert np.abs(got - want).max() < 1e-4


def test_missing_device_is_reported(unet_onnx):
    from medexport.errors import BackendUnavailableError
    from medexport.runtimes.openvino import Runner

    with pytest.raises(BackendUnavailableError, match="NPU"):
        Runner(unet_onnx[0], device="NPU")


def test_the_registry_builds_and_opens_it_with_the_one_signature(unet_onnx, tmp_path):
    """device defaults to CPU, threads reach the compiled model, precision sets the IR and the hint; max_batch
    (the batch stays dynamic) is ignored."""
    from medexport.runtimes import make_builder, open_runner
    from medexport.zoo.samples import real_inputs

    path, model = unet_onnx
    result = make_builder("ov", device=None, precision="fp32", max_batch=2).build(path, tmp_path)
    assert result.artifact == tmp_path / "model.xml" and result.info["devices"] == ["CPU"]
    images = real_inputs((2, 1, 64, 64), 2)
    with open_runner(result.artifact, "ov", threads=1) as runner:
        assert runner.describe()["inference_precision"] == "f32"
        assert int(runner.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        got = runner(images)
    with torch.no_grad():
        assert np.abs(got - model(torch.from_numpy(images)).numpy()).max() < 1e-4
    fp16 = make_builder("openvino", precision="fp16").build(path, tmp_path / "fp16").artifact
    assert fp16.with_suffix(".bin").stat().st_size < 0.6 * result.artifact.with_suffix(".bin").stat().st_size
