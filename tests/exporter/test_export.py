"""torch -> ONNX: checker, dynamic batch, simplification fallback, parity on real images."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from monai.networks.nets import UNet

from medexport.errors import ExportError, ModelLoadError, ParityError
from medexport.exporter import OPSET, check_onnx, compare_outputs, export_onnx
from medexport.zoo.samples import real_inputs


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet(2, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()


def test_export_is_checked_simplified_dynamic_and_matches_torch(unet, tmp_path):
    result = export_onnx(unet, (1, 1, 64, 64), tmp_path / "model.onnx")
    assert result.simplified and result.opset == OPSET
    assert result.input_shape == ["batch", 1, 64, 64]
    proto = onnx.load(str(result.path))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
    images = real_inputs((3, 1, 64, 64), 3)  # batch 3, although exported at batch 1
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": images})[0]
    with torch.no_grad():
        want = unet(torch.from_numpy(images)).numpy()
    parity = compare_outputs(want, got, tolerance=1e-4)
    assert parity.passed and parity.max_abs_error < 1e-4
    assert not list(tmp_path.glob("*.part"))


def test_simplifier_failure_falls_back(unet, tmp_path, monkeypatch):
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    result = export_onnx(unet, (1, 1, 64, 64), tmp_path / "model.onnx")
    assert not result.simplified
    assert "simulated onnxsim crash" in result.notes[0]
    check_onnx(result.path)


def test_static_batch(unet, tmp_path):
    result = export_onnx(unet, (2, 1, 64, 64), tmp_path / "model.onnx", dynamic_batch=False)
    assert result.input_shape == [2, 1, 64, 64]


def test_corrupt_onnx_is_rejected(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model")
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        check_onnx(bad)


def test_parity_failure_names_numbers():
    ref = np.zeros((2, 3))
    result = compare_outputs(ref, ref + 1e-3, tolerance=1e-4)
    assert not result.passed and result.max_abs_error == pytest.approx(1e-3)
    with pytest.raises(ParityError, match="max abs error 0.001"):
        result.raise_if_failed("thing")


def test_relative_part_of_the_tolerance_scales_with_the_output():
    ref = np.full((1, 4), 10.0)
    assert not compare_outputs(ref, ref + 5e-4, tolerance=1e-4).passed
    assert compare_outputs(ref, ref + 5e-4, tolerance=1e-4, rtol=1e-4).passed  # 1e-4 + 1e-4 * 10 = 1.1e-3
    assert not compare_outputs(ref, ref + 2e-3, tolerance=1e-4, rtol=1e-4).passed


class _Unpool(torch.nn.Module):
    """Max-pooling with indices, then max-unpooling (Quicknat's decoder): torch 2.13's TorchScript exporter fails."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.pool, self.unpool = torch.nn.MaxPool2d(2, return_indices=True), torch.nn.MaxUnpool2d(2)

    def forward(self, x):
        return self.unpool(*self.pool(self.conv(x)))


def test_a_model_the_torchscript_exporter_fails_on_exports_through_torch_export(tmp_path):
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    torch.manual_seed(0)
    model = _Unpool().eval()
    result = export_onnx(model, (1, 1, 32, 32), tmp_path / "m.onnx")
    assert result.opset == 18 and "torch.export-based exporter" in result.notes[0]
    assert result.input_shape == ["batch", 1, 32, 32]
    x = torch.rand(3, 1, 32, 32)
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy()})[0]
    assert np.abs(out - model(x).detach().numpy()).max() < 1e-5


def test_without_onnxscript_the_export_failure_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ExportError, match=r"medexport\[dynamo\]"):
        export_onnx(_Unpool().eval(), (1, 1, 32, 32), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
