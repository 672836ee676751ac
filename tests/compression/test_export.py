"""Compressed networks export to ordinary ONNX that passes the checker and runs on ONNX Runtime and OpenVINO."""
import numpy as np
import pytest
import torch

from medexport.compression import get_pass, list_passes
from medexport.exporter import check_onnx, export_onnx
from tests.compression.conftest import NETS, pass_config

EXPORT_NETS = (*NETS, "brain-region-alexnet", "brain-tissue-unet3d")  # every reference model too
CASES = [(net, method) for net in EXPORT_NETS for method in list_passes(family="lowrank")
         if not ("3d" in net and method == "spatial-svd")]  # spatial SVD is 2D only


@pytest.fixture(scope="module")
def exported(nets, tmp_path_factory):
    """(onnx path, input batch, torch output of the compressed model, original output shape) per case, cached."""
    cache: dict = {}

    def get(net: str, method: str):
        if (net, method) not in cache:
            model, shape = nets(net)
            small, record = get_pass(method).apply(model, shape, pass_config(method, shape, rank_ratio=0.25))
            assert record.layers, f"{method} factorized nothing in {net}"
            batch = np.random.default_rng(0).random((2, *shape[1:]), dtype=np.float32)
            with torch.no_grad():
                expected = small(torch.from_numpy(batch)).numpy()
                original_shape = model(torch.from_numpy(batch)).shape
            path = tmp_path_factory.mktemp(f"{net}-{method}") / "model.compressed.onnx"
            export_onnx(small, shape, path)
            cache[net, method] = (path, batch, expected, tuple(original_shape))
        return cache[net, method]

    return get


def _assert_close(actual: np.ndarray, expected: np.ndarray, original_shape) -> None:
    assert actual.shape == expected.shape == original_shape
    scale = max(float(np.abs(expected).max()), 1.0)
    assert float(np.abs(actual - expected).max()) / scale < 1e-4


@pytest.mark.parametrize("net,method", CASES)
def test_onnx_passes_the_checker_and_runs_on_onnxruntime(exported, net, method):
    from medexport.runtimes.onnxruntime.runner import Runner

    path, batch, expected, original_shape = exported(net, method)
    proto = check_onnx(path)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}  # ordinary ops only
    channel_gathers = [n for n in proto.graph.node if n.op_type == "Gather"
                       and any(a.name == "axis" and a.i == 1 for a in n.attribute)]
    assert not channel_gathers  # HSC's channel order is folded into weights, never permuted at run time
    with Runner(path) as runner:
        _assert_close(runner.infer(batch), expected, original_shape)


@pytest.mark.openvino
@pytest.mark.parametrize("net,method", CASES)
def test_onnx_runs_on_openvino(exported, net, method):
    from medexport.runtimes.openvino.runner import Runner

    path, batch, expected, original_shape = exported(net, method)
    with Runner(path) as runner:
        _assert_close(runner.infer(batch), expected, original_shape)
