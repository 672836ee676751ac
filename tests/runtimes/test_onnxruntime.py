"""ONNX Runtime builder/runner on the CPU: real inference, providers actually used, input checks."""
import json

import numpy as np
import pytest
import torch

from medexport.errors import BackendUnavailableError, DataError, InputError
from medexport.runtimes.onnxruntime import Builder, Runner
from medexport.zoo.samples import real_inputs


def test_build_records_where_nodes_ran(unet_onnx, tmp_path):
    path, _ = unet_onnx
    result = Builder().build(path, tmp_path)
    sidecar = json.loads((tmp_path / "model.onnxruntime.json").read_text())
    assert sidecar["providers_active"] == ["CPUExecutionProvider"]
    assert sidecar["nodes_per_provider"]["CPUExecutionProvider"] > 5
    assert result.artifact == path


def test_runner_matches_torch_on_real_images(unet_onnx):
    path, model = unet_onnx
    images = real_inputs((4, 1, 64, 64), 4)
    with Runner(path) as runner:
        assert runner.input_shape == [None, 1, 64, 64]
        got = runner(images)
    with torch.no_grad():
        want = model(torch.from_numpy(images)).numpy()
    assert np.abs(got - want).max() < 1e-4


def test_unavailable_provider_is_an_error_not_a_silent_fallback(unet_onnx):
    path, _ = unet_onnx
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        Runner(path, device="cuda")


def test_input_checks(unet_onnx):
    path, _ = unet_onnx
    with Runner(path) as runner:
        with pytest.raises(InputError, match="does not match"):
            runner(np.zeros((1, 1, 32, 32), np.float32))
        bad = np.zeros((1, 1, 64, 64), np.float32)
        bad[0, 0, 3, 3] = np.nan
        with pytest.raises(DataError, match="NaN"):
            runner(bad)
