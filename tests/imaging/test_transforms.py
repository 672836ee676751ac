"""Intensity modes, slicing and empty-slice skipping on real scans."""
import numpy as np
import pytest

from medexport.imaging import PreprocessSpec, load_images

pydicom = pytest.importorskip("pydicom")


def test_ct_window_maps_hounsfield_units_linearly_and_clips(dicom_file):
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    got = load_images(path, PreprocessSpec(spatial_size=(128, 128), intensity="window", window=(40, 400))).images[0, 0]
    np.testing.assert_allclose(got, np.clip((hu - (40 - 200)) / 400, 0, 1), atol=1e-6)
    assert 0 < (got == 1).mean() < 0.5 and 0 < (got == 0).mean() < 0.5   # bone and air clip, soft tissue in between


def test_minmax_and_percentile_scale_each_image_to_unit_range(dicom_file):
    path = dicom_file("MR_small.dcm")
    mm = load_images(path, PreprocessSpec(spatial_size=(64, 64), intensity="minmax")).images
    assert mm.min() == 0.0 and mm.max() == pytest.approx(1.0)
    pc = load_images(path, PreprocessSpec(spatial_size=(64, 64), percentiles=(1, 99))).images
    assert pc.min() == 0.0 and pc.max() == 1.0
    assert 0.01 <= (pc == 1.0).mean() <= 0.03                # ~1% above the 99th percentile clips


def test_empty_slices_are_skipped_and_slice_axis_is_honoured(tmp_path, pyradiomics):
    sitk = pytest.importorskip("SimpleITK")
    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(pyradiomics / "breast1_image.nrrd"))).astype(np.float32)
    padded = np.pad(vol, ((4, 4), (0, 0), (0, 0)))           # 4 blank slices before and after the scan
    np.save(tmp_path / "padded.npy", padded)
    axial = load_images(tmp_path / "padded.npy", PreprocessSpec(spatial_size=(64, 64)))
    assert len(axial) == vol.shape[0] == 21
    assert axial.images.reshape(len(axial), -1).max(axis=1).min() > 0.5   # no blank slice kept
    coronal = load_images(tmp_path / "padded.npy", PreprocessSpec(spatial_size=(32, 32), slice_axis=1,
                                                                  max_slices_per_volume=6))
    assert coronal.images.shape == (6, 1, 32, 32)


def test_pad_crop_keeps_pixel_values(dicom_file):
    path = dicom_file("MR_small.dcm")
    raw = load_images(path, PreprocessSpec(spatial_size=(64, 64), intensity="none")).images[0, 0]
    padded = load_images(path, PreprocessSpec(spatial_size=(80, 48), intensity="none", fit="pad_crop")).images[0, 0]
    np.testing.assert_array_equal(padded[8:72], raw[:, 8:56])
    assert (padded[:8] == 0).all() and (padded[72:] == 0).all()
