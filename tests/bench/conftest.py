import pytest
import torch
from monai.networks.nets import UNet

from medexport.exporter import export_onnx


@pytest.fixture(scope="session")
def unet2d_onnx(tmp_path_factory):
    """A small real MONAI UNet (2D, 3 classes, 64x64) exported once with a dynamic batch."""
    torch.manual_seed(0)
    model = UNet(2, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()
    return export_onnx(model, (1, 1, 64, 64), tmp_path_factory.mktemp("onnx2d") / "unet2d.onnx").path


@pytest.fixture(scope="session")
def unet3d_onnx(tmp_path_factory):
    """A small real MONAI UNet (3D, 2 classes, 16^3 patches) exported once."""
    torch.manual_seed(0)
    model = UNet(3, 1, 2, (4, 8), (2,), num_res_units=0).eval()
    return export_onnx(model, (1, 1, 16, 16, 16), tmp_path_factory.mktemp("onnx3d") / "unet3d.onnx").path
