"""Factories of the reference networks (untrained), chosen to deploy well.

Every layer maps to a plain ONNX op that all backends fuse: Conv + BatchNorm (folds into the
conv) + ReLU, max-pool, transposed conv, concat, Linear. No InstanceNorm or PReLU, which fold
badly or run slowly on TensorRT/OpenVINO, and no residual units in the U-Nets: MONAI's
``num_res_units=1`` adds a residual Add and a second conv per level, and with them OpenVINO's
INT8 gain over FP32 stayed near 1.2x on this CPU; plain Conv-BN-ReLU blocks reach 2x and more
(measured with NNCF default PTQ, batch 1: 2D 128^2 3.68 -> 3.00 ms with residual units,
2.15 -> 0.89 ms without). Importing this module imports torch; the registry
names these functions as strings so ``import medexport.zoo`` stays light.
"""
from __future__ import annotations

import torch
from torch import nn

TISSUE_CLASSES = 3   # background, grey matter, white matter
REGION_CLASSES = 6   # frontal, parietal, temporal, occipital, deep grey, cerebellum


def brain_tissue_unet2d() -> nn.Module:
    """MONAI 2D U-Net (4 levels, 32-256 channels, plain Conv-BN-ReLU blocks), BatchNorm + ReLU."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=1, out_channels=TISSUE_CLASSES,
                channels=(32, 64, 128, 256), strides=(2, 2, 2), num_res_units=0,
                norm="batch", act="relu")


def brain_tissue_unet3d() -> nn.Module:
    """MONAI 3D U-Net (4 levels, 32-256 channels, plain Conv-BN-ReLU blocks), BatchNorm + ReLU."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=TISSUE_CLASSES,
                channels=(32, 64, 128, 256), strides=(2, 2, 2), num_res_units=0,
                norm="batch", act="relu")


class AlexNetSmall(nn.Module):
    """AlexNet scaled down for 1x64x64 patches: 5 convs (ReLU, 3 max-pools), then 3 linear layers.

    Same topology as torchvision's AlexNet (the backbone of the HSC low-rank compression paper),
    with BatchNorm after each conv so training converges in minutes on two CPU cores; BatchNorm
    folds into the conv at export. Example::

        logits = AlexNetSmall()(torch.zeros(1, 1, 64, 64))   # (1, 6)
    """

    def __init__(self, in_channels: int = 1, num_classes: int = REGION_CLASSES,
                 widths: tuple[int, ...] = (24, 48, 64, 64, 48), hidden: int = 128,
                 dropout: float = 0.3) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.features = nn.Sequential(
            _conv(in_channels, c1, 5), nn.MaxPool2d(2),   # 64 -> 32
            _conv(c1, c2, 3), nn.MaxPool2d(2),            # 32 -> 16
            _conv(c2, c3, 3),
            _conv(c3, c4, 3),
            _conv(c4, c5, 3), nn.MaxPool2d(2),            # 16 -> 8
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(c5 * 8 * 8, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden // 2), nn.ReLU(inplace=True),
            nn.Linear(hidden // 2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def brain_region_alexnet() -> nn.Module:
    """AlexNet-style 6-class brain-region classifier for 1x1x64x64 T1 patches."""
    return AlexNetSmall()
