"""calibration stage: real medical images in, preprocessed model inputs and an anonymous manifest out."""
from medexport.calibration.sources import ImageSet, SourceRecord, load_images, load_labeled
from medexport.calibration.spec import PreprocessSpec

__all__ = ["ImageSet", "PreprocessSpec", "SourceRecord", "load_images", "load_labeled"]
