"""Every way a user hands over a model, and the unsafe ones refused."""
import numpy as np
import pytest
import torch

from medexport.errors import InputError, ModelLoadError
from medexport.loading import ModelSpec, load_model, parse_shape

UNET = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]}


def _factory_spec(**kw):
    return ModelSpec(model="monai.networks.nets:UNet", model_kwargs=UNET, input_shape="1x1x32x32", **kw)


def test_factory_with_nested_state_dict(tmp_path):
    torch.manual_seed(1)
    source = load_model(_factory_spec()).module
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3},
               tmp_path / "ckpt.pt")
    loaded = load_model(_factory_spec(weights=str(tmp_path / "ckpt.pt")))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), source(x))
    assert loaded.kind == "factory" and len(loaded.provenance["weights_sha256"]) == 64


def test_checkpoint_that_does_not_fit(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="does not fit the model"):
        load_model(_factory_spec(weights=str(tmp_path / "other.pt")))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x)


def test_pickled_model_needs_explicit_trust(tmp_path):
    torch.save(Net(), tmp_path / "whole.pt")
    spec = ModelSpec(model=str(tmp_path / "whole.pt"), input_shape="1x1x16x16")
    with pytest.raises(ModelLoadError, match="--trust-pickle"):
        load_model(spec)
    spec.trust_pickle = True
    assert load_model(spec).kind == "pickle"


def test_torch_export_program(tmp_path):
    model = Net().eval()
    program = torch.export.export(model, (torch.rand(1, 1, 16, 16),))
    torch.export.save(program, tmp_path / "net.pt2")
    loaded = load_model(ModelSpec(model=str(tmp_path / "net.pt2")))
    assert loaded.kind == "exported" and loaded.input_shape == (1, 1, 16, 16)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), model(x))


def test_yaml_spec_with_relative_weights(tmp_path):
    torch.save(load_model(_factory_spec()).module.state_dict(), tmp_path / "w.pt")
    (tmp_path / "model.yaml").write_text(
        "model: monai.networks.nets:UNet\nweights: w.pt\ninput_shape: 1x1x32x32\nname: tiny\n"
        "model_kwargs: {spatial_dims: 2, in_channels: 1, out_channels: 2, channels: [4, 8], strides: [2]}\n")
    loaded = load_model(ModelSpec.from_file(tmp_path / "model.yaml"))
    assert loaded.name == "tiny" and loaded.input_shape == (1, 1, 32, 32)
    assert ModelSpec.from_file(tmp_path / "model.yaml").to_dict()["weights"] == "w.pt"  # no absolute paths


def test_unknown_spec_key(tmp_path):
    (tmp_path / "m.json").write_text('{"model": "x:y", "colour": "red"}')
    with pytest.raises(InputError, match="colour"):
        ModelSpec.from_file(tmp_path / "m.json")


@pytest.mark.parametrize("text", ["128", "abc", "1x0x32x32", "1x1x2x2x2x2"])
def test_bad_shapes(text):
    with pytest.raises(InputError):
        ModelSpec(input_shape=text)


def test_parse_shape():
    assert parse_shape("2x1x64x64x64") == (2, 1, 64, 64, 64)


def test_default_is_the_trained_reference():
    loaded = load_model(ModelSpec())
    assert loaded.name == "brain-tissue-unet2d" and loaded.reference is not None
    images, _ = loaded.reference.heldout()
    assert np.isfinite(images).all()


def test_reference_model_by_name_and_unknown_names():
    assert load_model(ModelSpec(model="brain-region-alexnet")).input_shape == (1, 1, 64, 64)
    with pytest.raises(InputError, match="brain-tissue-unet3d"):
        load_model(ModelSpec(model="no-such-model"))
