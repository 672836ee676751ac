import pytest
import torch
from monai.networks.nets import UNet

from medexport.exporter import export_onnx


@pytest.fixture(scope="session")
def unet_onnx(tmp_path_factory):
    """A small MONAI UNet exported once with a dynamic batch, and the torch model it came from."""
    torch.manual_seed(0)
    model = UNet(2, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()
    path = export_onnx(model, (1, 1, 64, 64), tmp_path_factory.mktemp("onnx") / "model.onnx").path
    return path, model
