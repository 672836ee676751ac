"""One INT8 build of the reference model, calibrated on DICOM files that carry patient identifiers, shared by the
packaging tests (built once: about half a minute on two cores)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from medexport.cli import cli

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-4711-SECRET"


def write_dicom_slices(folder, images: np.ndarray) -> None:
    """Real MR slices as DICOM files whose tags and file names carry a patient's name and ID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir()
    for i, image in enumerate(images):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientName, ds.PatientID = "MR", PATIENT_NAME, PATIENT_ID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.InstanceNumber = i + 1
        pixels = np.round(image[0] * 4000).astype(np.uint16)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelSpacing = [1.5, 1.5]
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"{PATIENT_ID}_{i:03d}.dcm", enforce_file_format=True)


@pytest.fixture(scope="session")
def int8_build(tmp_path_factory):
    """An INT8 build folder of brain-tissue-unet2d for ONNX Runtime, calibrated on 8 DICOM slices with PatientName
    and PatientID set (and in the file names)."""
    from medexport.zoo import get_model

    root = tmp_path_factory.mktemp("packaging")
    calib = root / f"calib-{PATIENT_ID}"
    write_dicom_slices(calib, get_model("brain-tissue-unet2d").calibration()[:8])
    out = root / "build"
    result = CliRunner().invoke(cli, ["build", "--target", "ort", "--precision", "int8", "--calib", str(calib),
                                      "--no-latency", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out
