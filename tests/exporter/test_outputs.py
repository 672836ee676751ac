"""Models whose outputs are not one tensor: None dropped, tuples and dicts flattened and named, the first the
prediction that torch and ONNX Runtime compare."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from monai.networks.nets import SegResNetVAE, UNet
from torch import nn

from medexport._outputs import flatten_outputs, prediction
from medexport.errors import ExportError
from medexport.exporter import compare_outputs, export_onnx
from medexport.zoo.samples import real_inputs


def test_segresnetvae_returning_none_exports_and_passes_parity_on_onnxruntime(tmp_path):
    from medexport.runtimes.onnxruntime.runner import Runner as OrtRunner
    from medexport.runtimes.torch import Runner as TorchRunner

    torch.manual_seed(0)
    model = SegResNetVAE(input_image_size=(16, 16, 16), spatial_dims=3, init_filters=8, in_channels=1, out_channels=2,
                         vae_nz=8).eval()
    result = export_onnx(model, (1, 1, 16, 16, 16), tmp_path / "model.onnx")  # eval mode: returns (logits, None)
    facts = result.to_dict()
    assert facts["outputs"] == [{"name": "output", "shape": ["batch", 2, 16, 16, 16], "source": "out[0]"}]
    assert facts["prediction"] == "output"
    images = real_inputs((2, 1, 16, 16, 16), 2)
    with OrtRunner(result.path) as onnx_runner:
        got = onnx_runner.infer(images)
    want = TorchRunner(model, (1, 1, 16, 16, 16)).infer(images)
    parity = compare_outputs(want, got, tolerance=1e-4)
    assert parity.passed and parity.max_abs_error < 1e-4 and want.shape == (2, 2, 16, 16, 16)


class _Heads(nn.Module):
    """A U-Net returning a dict: logits, probabilities and an (absent) auxiliary loss, plus a nested tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.net = UNet(2, 1, 3, (8, 16), (2,), num_res_units=0)

    def forward(self, x):
        logits = self.net(x)
        return {"seg": logits, "aux": None, "extra": (torch.softmax(logits, 1), logits.mean((2, 3)))}


def test_a_dict_output_model_exports_named_outputs_and_records_where_each_came_from(tmp_path):
    torch.manual_seed(0)
    model = _Heads().eval()
    result = export_onnx(model, (1, 1, 32, 32), tmp_path / "model.onnx")
    assert result.output_names == ["seg", "extra.0", "extra.1"]
    assert result.to_dict()["outputs"] == [
        {"name": "seg", "shape": ["batch", 3, 32, 32], "source": "out['seg']"},
        {"name": "extra.0", "shape": ["batch", 3, 32, 32], "source": "out['extra'][0]"},
        {"name": "extra.1", "shape": ["batch", 3], "source": "out['extra'][1]"}]
    x = real_inputs((3, 1, 32, 32), 3)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = dict(zip(result.output_names, session.run(None, {"input": x})))
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    assert np.abs(got["seg"] - want["seg"].numpy()).max() < 1e-4
    assert np.abs(got["extra.1"] - want["extra"][1].numpy()).max() < 1e-4
    assert torch.equal(prediction(want), want["seg"])


def test_flattening_names_positions_and_refuses_what_is_not_a_tensor():
    a, b = torch.zeros(1), torch.ones(1)
    assert [(o.name, o.source) for o in flatten_outputs((None, a, [b]))] == [("output", "out[1]"),
                                                                             ("output_1", "out[2][0]")]
    assert prediction((None, b)) is b
    with pytest.raises(ExportError, match=r"model output out\[1\] is a str"):
        flatten_outputs((a, "label"))
    with pytest.raises(ExportError, match="returns no tensor"):
        flatten_outputs((None,))
