"""load_images / load_labeled on real scans: errors, skipping, sampling, labels and an anonymous manifest."""
import json
import shutil

import numpy as np
import pytest

from medexport.imaging import ImageSet, PreprocessSpec, load_images, load_labeled
from medexport.errors import DataError, DataWarning

pydicom = pytest.importorskip("pydicom")
SPEC = PreprocessSpec(spatial_size=(64, 64))


def truncated_copy(src, dest, keep: float = 0.5):
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def test_missing_path_empty_folder_and_text_folder_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist: .*nowhere"):
        load_images(tmp_path / "nowhere", SPEC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no supported image files"):
        load_images(tmp_path / "empty", SPEC)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    with pytest.raises(DataError, match="no supported image files"):
        load_images(tmp_path / "notes", SPEC)


def test_mixed_folder_loads_the_readable_files_and_names_the_corrupt_one(tmp_path, dicom_file):
    shutil.copy(dicom_file("MR_small.dcm"), tmp_path / "mr.dcm")
    shutil.copy(dicom_file("CT_small.dcm"), tmp_path / "ct.dcm")
    truncated_copy(dicom_file("CT_small.dcm"), tmp_path / "broken.dcm")
    truncated_copy(dicom_file("MR_small.dcm"), tmp_path / "header_only.dcm", keep=0.05)
    with pytest.warns(DataWarning, match=r"skipped 2 of 4 image files: .*broken\.dcm \(not a readable DICOM file"):
        data = load_images(tmp_path, SPEC)
    assert len(data) == 2 and data.images.shape == (2, 1, 64, 64)
    assert sorted(name for name, _ in data.skipped) == ["broken.dcm", "header_only.dcm"]
    assert data.manifest()["skipped_files"] == 2
    assert "header_only.dcm" not in json.dumps(data.manifest())    # reasons are counted, files not named
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert data.images.reshape(2, -1).std(axis=1).min() > 0.1    # real anatomy, not a blank


def test_every_file_unreadable_raises_naming_at_most_five(tmp_path, dicom_file):
    for i in range(7):
        truncated_copy(dicom_file("CT_small.dcm"), tmp_path / f"bad{i}.dcm")
    with pytest.raises(DataError, match=r"none of the 7 .*bad0\.dcm.*bad4\.dcm.*\+2 more") as info:
        load_images(tmp_path, SPEC)
    assert "bad5.dcm" not in str(info.value) and "\n" not in str(info.value)


def test_nan_in_a_real_slice_names_the_file(tmp_path, dicom_file):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    arr = ds.pixel_array.astype(np.float32)
    arr[10, 10] = np.nan
    np.save(tmp_path / "ct_nan.npy", arr)
    with pytest.raises(DataError, match=r"ct_nan\.npy holds 1 NaN/Inf"):
        load_images(tmp_path, SPEC)


def test_3d_spec_on_a_2d_png_raises(tmp_path, dicom_file):
    from PIL import Image

    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    Image.fromarray((ds.pixel_array / ds.pixel_array.max() * 255).astype(np.uint8)).save(tmp_path / "mr.png")
    with pytest.raises(DataError, match=r"spatial_size \(8, 64, 64\) is 3D but mr\.png is a 2D image"):
        load_images(tmp_path / "mr.png", PreprocessSpec(spatial_size=(8, 64, 64)))


def test_list_of_files_and_per_format_counts(ct_series, dicom_file, pyradiomics):
    folder, _ = ct_series
    data = load_images([folder, dicom_file("MR_small.dcm"), pyradiomics / "breast1_image.nrrd"],
                       PreprocessSpec(spatial_size=(32, 32), max_slices_per_volume=3))
    manifest = data.manifest()
    assert manifest["files_by_format"] == {"dicom": 6, "nrrd": 1}
    assert len(manifest["sha256"]) == 7 and all(len(h) == 64 for h in manifest["sha256"])
    assert {(len(r.sha256), r.format, r.n_images) for r in data.records} == {(5, "dicom", 3), (1, "dicom", 1),
                                                                             (1, "nrrd", 3)}
    assert manifest["count"] == len(data) == 7
    assert np.bincount(data.source_index).tolist() == [r.n_images for r in data.records]


def test_manifest_holds_no_patient_identifiers(tmp_path, dicom_file):
    tags = ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyInstanceUID",
            "SeriesInstanceUID", "SOPInstanceUID", "InstitutionName", "AccessionNumber")
    secrets = set()
    for name in ("CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm"):
        ds = pydicom.dcmread(dicom_file(name), stop_before_pixels=True)
        values = {str(ds.get(t)) for t in tags if ds.get(t) not in (None, "")}
        assert str(ds.PatientName) in values and str(ds.PatientID) in values
        secrets |= values
        shutil.copy(dicom_file(name), tmp_path / f"{ds.PatientName}_{ds.PatientID}.dcm")  # names leak too
    data = load_images(tmp_path, SPEC, progress=True)
    assert len(data) == 3
    text = json.dumps(data.manifest())
    leaked = [s for s in secrets if s in text]
    assert not leaked
    assert "CompressedSamples" not in text and ".dcm" not in text


def test_sampling_is_stratified_spread_and_seeded(pyradiomics):
    files = [pyradiomics / f"{n}_image.nrrd" for n in ("brain1", "brain2", "breast1")]
    spec = PreprocessSpec(spatial_size=(64, 64))
    full = load_images(files, spec)
    a = load_images(files, spec, max_samples=9, seed=7)
    b = load_images(files, spec, max_samples=9, seed=7)
    assert len(a) == 9 and np.bincount(a.source_index).tolist() == [3, 3, 3]
    np.testing.assert_array_equal(a.images, b.images)
    c = load_images(files, spec, max_samples=9, seed=8)
    assert not np.array_equal(a.images, c.images)
    # The 3 slices of brain1 are spread over its informative slices: found early, middle and late.
    brain1 = full.images[full.source_index == 0]
    positions = [int(np.argmin(np.abs(brain1 - img).reshape(len(brain1), -1).sum(1)))
                 for img in a.images[a.source_index == 0]]
    n = len(brain1)
    assert positions == sorted(positions) and positions[0] < n / 3 and positions[-1] >= 2 * n / 3
    fewer = load_images(files, spec, max_samples=2, seed=0)
    assert len(fewer) == 2 and len(fewer.records) == 2


def test_sampling_shortfall_of_a_small_source_passes_to_the_others(dicom_file, pyradiomics):
    data = load_images([dicom_file("MR_small.dcm"), pyradiomics / "breast1_image.nrrd"],
                       PreprocessSpec(spatial_size=(32, 32)), max_samples=10, seed=0)
    assert len(data) == 10 and sorted(r.n_images for r in data.records) == [1, 9]


def test_labeled_pairs_follow_the_image_geometry(pyradiomics):
    sitk = pytest.importorskip("SimpleITK")
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(pyradiomics / "brain1_label.nrrd")))
    lesion_slices = int((raw.reshape(len(raw), -1).sum(1) > 0).sum())
    data = load_labeled(pyradiomics / "brain1_image.nrrd", pyradiomics / "brain1_label.nrrd",
                        PreprocessSpec(spatial_size=(128, 128)))
    assert isinstance(data, ImageSet) and data.labels.dtype == np.int64
    assert data.labels.shape == (len(data), 128, 128) and set(np.unique(data.labels)) == {0, 1}
    assert int((data.labels.reshape(len(data), -1).sum(1) > 0).sum()) == lesion_slices
    assert data.labels.sum() == pytest.approx(raw.sum() / 4, rel=0.1)   # 256 -> 128: a quarter of the voxels
    # The tumour is brighter than the rest of the brain on this post-contrast T1.
    imgs = data.images[:, 0]
    assert imgs[data.labels == 1].mean() > imgs[(data.labels == 0) & (imgs > 0.1)].mean()
    assert data.manifest()["labels"] is True


def test_labeled_3d_resampled_with_nearest_neighbour(pyradiomics):
    spec = PreprocessSpec(spatial_size=(48, 96, 96), spacing=(2.0, 2.0, 2.0), orientation="RAS")
    data = load_labeled(pyradiomics / "brain1_image.nrrd", pyradiomics / "brain1_label.nrrd", spec)
    assert data.images.shape == (1, 1, 48, 96, 96) and data.labels.shape == (1, 48, 96, 96)
    assert set(np.unique(data.labels)) == {0, 1}


def test_labeled_mismatches_raise(pyradiomics):
    with pytest.raises(DataError, match="cannot pair"):
        load_labeled([pyradiomics / "brain1_image.nrrd", pyradiomics / "brain2_image.nrrd"],
                     pyradiomics / "brain1_label.nrrd", SPEC)
    with pytest.raises(DataError, match="label brain2_label.nrrd has shape"):
        load_labeled(pyradiomics / "brain1_image.nrrd", pyradiomics / "brain2_label.nrrd", SPEC)


def test_labeled_lists_of_pairs_are_sampled_together(pyradiomics):
    names = ("brain2", "breast1")
    data = load_labeled([pyradiomics / f"{n}_image.nrrd" for n in names],
                        [pyradiomics / f"{n}_label.nrrd" for n in names],
                        PreprocessSpec(spatial_size=(48, 48)), max_samples=8, seed=1)
    assert data.images.shape == (8, 1, 48, 48) and data.labels.shape == (8, 48, 48)
    assert np.bincount(data.source_index).tolist() == [4, 4]
    again = load_labeled([pyradiomics / f"{n}_image.nrrd" for n in names],
                         [pyradiomics / f"{n}_label.nrrd" for n in names],
                         PreprocessSpec(spatial_size=(48, 48)), max_samples=8, seed=1)
    np.testing.assert_array_equal(data.labels, again.labels)


def test_dicom_objects_that_are_not_images_are_skipped_with_their_kind(tmp_path, dicom_file):
    """A SEG or an RT dose grid holds pixel data but is no image to calibrate on; an SR holds no pixels at all."""
    from pydicom.uid import SegmentationStorage

    shutil.copy(dicom_file("MR_small.dcm"), tmp_path / "mr.dcm")
    seg = pydicom.dcmread(dicom_file("CT_small.dcm"))
    seg.SOPClassUID = seg.file_meta.MediaStorageSOPClassUID = SegmentationStorage
    seg.Modality = "SEG"
    seg.save_as(tmp_path / "seg.dcm")
    shutil.copy(dicom_file("rtdose.dcm"), tmp_path / "dose.dcm")
    shutil.copy(dicom_file("test-SR.dcm"), tmp_path / "report.dcm")
    with pytest.warns(DataWarning, match="skipped 3 of 4 image files"):
        data = load_images(tmp_path, SPEC)
    assert len(data) == 1
    assert dict(data.skipped) == {"seg.dcm": "not an image (Segmentation Storage, modality SEG)",
                                  "dose.dcm": "not an image (RT Dose Storage, modality RTDOSE)",
                                  "report.dcm": "not an image (Comprehensive SR Storage, modality SR)"}


@pytest.mark.skipif(__import__("pydicom.pixels").pixels.get_decoder("1.2.840.10008.1.2.4.80").is_available,
                    reason="a JPEG-LS decoder is installed here")
def test_jpeg_ls_without_a_decoder_is_skipped_naming_the_package_to_install(tmp_path, dicom_file):
    shutil.copy(dicom_file("MR_small.dcm"), tmp_path / "mr.dcm")
    shutil.copy(dicom_file("MR_small_jpeg_ls_lossless.dcm"), tmp_path / "mr_jls.dcm")
    with pytest.warns(DataWarning, match=r'mr_jls\.dcm \(no decoder installed for its JPEG-LS Lossless Image '
                                         r'Compression pixel data: pip install "medexport\[dicom\]"'):
        data = load_images(tmp_path, SPEC)
    assert len(data) == 1 and [name for name, _ in data.skipped] == ["mr_jls.dcm"]
    reasons = data.manifest()["skipped_reasons"]
    assert list(reasons.values()) == [1] and "pyjpegls" in next(iter(reasons))
    assert "mr_jls" not in json.dumps(data.manifest())


def test_label_maps_beside_their_images_are_skipped(pyradiomics):
    with pytest.warns(DataWarning, match=r"breast1_label\.nrrd \(a label map, not an image \(named so, 2 integer"):
        data = load_images([pyradiomics / "breast1_image.nrrd", pyradiomics / "breast1_label.nrrd"],
                           PreprocessSpec(spatial_size=(32, 32), max_slices_per_volume=4))
    assert len(data.records) == 1 and len(data) == 4
