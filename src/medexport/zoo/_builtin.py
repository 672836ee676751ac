"""The reference models shipped with medexport (trained by scripts/zoo/train_<name>.py)."""
from __future__ import annotations

from medexport.zoo._registry import ReferenceModel, register_model

TISSUE = ("background", "grey_matter", "white_matter")
REGIONS = ("frontal", "parietal", "temporal", "occipital", "deep_grey", "cerebellum")

BRAIN_TISSUE_UNET2D = register_model(ReferenceModel(
    name="brain-tissue-unet2d",
    task="segmentation",
    classes=TISSUE,
    input_shape=(1, 1, 128, 128),
    factory="medexport.zoo.architectures:brain_tissue_unet2d",
    weights="brain-tissue-unet2d.pt",
    card="brain-tissue-unet2d.md",
    spacing=(1.5, 1.5),
))

BRAIN_TISSUE_UNET3D = register_model(ReferenceModel(
    name="brain-tissue-unet3d",
    task="segmentation",
    classes=TISSUE,
    input_shape=(1, 1, 48, 48, 48),
    factory="medexport.zoo.architectures:brain_tissue_unet3d",
    weights="brain-tissue-unet3d.pt",
    card="brain-tissue-unet3d.md",
    spacing=(2.0, 2.0, 2.0),
    roi_size=(48, 48, 48),
))

BRAIN_REGION_ALEXNET = register_model(ReferenceModel(
    name="brain-region-alexnet",
    task="classification",
    classes=REGIONS,
    input_shape=(1, 1, 64, 64),
    factory="medexport.zoo.architectures:brain_region_alexnet",
    weights="brain-region-alexnet.pt",
    card="brain-region-alexnet.md",
    spacing=(1.0, 1.0),
))
