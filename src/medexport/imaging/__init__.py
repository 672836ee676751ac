"""Medical image I/O: DICOM, NIfTI, NRRD, PNG and NPY files in, preprocessed model inputs and an anonymous
manifest out. Used by calibration, evaluation, fine-tuning and the zoo; holds no patient identifiers."""
from medexport.imaging.sources import ImageSet, SourceRecord, load_images, load_labeled
from medexport.imaging.spec import PreprocessSpec

__all__ = ["ImageSet", "PreprocessSpec", "SourceRecord", "load_images", "load_labeled"]
