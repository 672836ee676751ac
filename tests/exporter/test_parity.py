"""Parity judged against float64 with decisions, and the first diverging node of a broken graph."""
import numpy as np
import onnx
import pytest
import torch
from monai.networks.nets import UNet
from onnx import numpy_helper

from medexport.errors import ParityError
from medexport.exporter import compare_outputs, export_onnx
from medexport.exporter.divergence import first_divergence, module_path
from medexport.zoo.samples import real_inputs


def test_float_noise_within_torch_error_times_the_factor_passes_and_decisions_are_counted():
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(2, 3, 8, 8))
    torch32 = exact + rng.normal(scale=1e-6, size=exact.shape)          # torch's own FP32 error ~4e-6
    artifact = exact + rng.normal(scale=2e-4, size=exact.shape)         # a runtime 100x further off
    assert not compare_outputs(torch32, artifact, tolerance=1e-4, rtol=1e-4).passed   # the FP32-only rule
    result = compare_outputs(exact, artifact, tolerance=1e-4, rtol=1e-4, float32_reference=torch32)
    assert result.passed and result.reference == "float64"
    assert result.allowed_error == pytest.approx(1000 * result.torch_error)
    decisions = result.to_dict()["decisions"]
    assert decisions["kind"] == "segmentation" and decisions["total"] == 2 * 8 * 8
    assert decisions["agreement"] >= 0.99 and set(decisions["dice"]) == {"0", "1", "2"}


def test_changed_decisions_fail_even_under_a_loose_tolerance():
    exact = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    swapped = exact[:, ::-1].copy()
    result = compare_outputs(exact, swapped, tolerance=10.0, rtol=0.0)
    assert result.numbers_passed and not result.decisions_passed
    assert result.decisions == {"kind": "classification", "agreement": 0.0, "changed": 4, "total": 4}
    with pytest.raises(ParityError, match=r"argmax agreement 0.000% \(4 of 4 inputs changed"):
        result.raise_if_failed("thing")


def test_module_path_of_numbered_children():
    assert module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_path("/down_1/convs/conv_0/adn/N/InstanceNormalization") == "down_1.convs.conv_0.adn.N"


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_a_changed_weight_is_found_at_its_node_and_float_noise_is_not(backend, tmp_path):
    torch.manual_seed(0)
    net = UNet(2, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()   # BatchNorm folded into the convs
    path = export_onnx(net, (1, 1, 64, 64), tmp_path / "model.onnx").path
    batch = real_inputs((1, 1, 64, 64), 1)
    healthy = first_divergence(net, path, batch, backend)
    assert not healthy["diverged"] and "no node diverges" in healthy["message"]

    proto = onnx.load(str(path))
    weight = next(t for t in proto.graph.initializer if t.name == "model.1.submodule.1.submodule.residual.weight")
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 0.5
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(proto, str(path))
    broken = first_divergence(net, path, batch, backend)
    assert broken["diverged"] and broken["op"] == "Conv"
    assert broken["node"] == "/model/model.1/submodule/submodule.1/submodule/residual/Conv"
    assert broken["relative_error"] > 0.05 and "report a bug" in broken["message"]
