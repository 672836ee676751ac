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


def test_the_registry_builds_and_opens_it_with_the_one_signature(unet_onnx, tmp_path):
    """device maps to the provider; precision (the ONNX's own) and max_batch (the batch is dynamic) are ignored."""
    from medexport.runtimes import make_builder, open_runner
    from medexport.runtimes.onnxruntime.util import provider_names

    assert provider_names("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_names(None) == provider_names("CPUExecutionProvider") == ["CPUExecutionProvider"]
    path, model = unet_onnx
    result = make_builder("ort", device="cpu", precision="int8", max_batch=2).build(path, tmp_path)
    assert result.artifact == path and result.info["providers_requested"] == ["CPUExecutionProvider"]
    images = real_inputs((3, 1, 64, 64), 3)
    with open_runner(result.artifact, "ort", device="cpu", threads=1, precision="fp16") as runner:
        assert runner.session.get_session_options().intra_op_num_threads == 1
        got = runner(images)
    with torch.no_grad():
        assert np.abs(got - model(torch.from_numpy(images)).numpy()).max() < 1e-4
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        make_builder("onnxruntime", device="cuda").build(path, tmp_path)
