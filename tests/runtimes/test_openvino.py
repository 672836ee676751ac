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
