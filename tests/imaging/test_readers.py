"""Every format read from real files, compared with the pixels their own libraries return."""
from pathlib import Path

import numpy as np
import pytest

from medexport.errors import DataError, DataWarning
from medexport.imaging import PreprocessSpec, load_images
from medexport.imaging.readers import read_unit

pydicom = pytest.importorskip("pydicom")


def raw_spec(*size, **kw) -> PreprocessSpec:
    """A spec that keeps values as read, for comparing against the libraries' own arrays."""
    return PreprocessSpec(spatial_size=size, intensity="none", **kw)


def test_ct_slice_is_in_hounsfield_units_after_rescale(dicom_file):
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    got = load_images(path, raw_spec(128, 128)).images[0, 0]
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(got, expected)
    assert got.min() == 128 - 1024                          # air-ish, in HU, not raw stored values


def test_monochrome1_chest_xray_is_inverted_so_lungs_are_dark(dicom_file):
    path = dicom_file("RG1_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    img = load_images(path, PreprocessSpec(spatial_size=(256, 256))).images[0, 0]
    raw = ds.pixel_array.astype(np.float64)
    # Lung fields (left and right of the spine, upper chest) versus the mediastinum/spine between them.
    lungs = np.r_[img[64:96, 64:96].ravel(), img[64:96, 160:192].ravel()].mean()
    mediastinum = img[64:128, 112:144].mean()
    assert lungs < 0.5 < mediastinum and mediastinum - lungs > 0.25
    # The stored values say the opposite: MONOCHROME1 stores air bright.
    sy, sx = raw.shape[0] / 256, raw.shape[1] / 256
    raw_lung = raw[int(64 * sy):int(96 * sy), int(64 * sx):int(96 * sx)].mean()
    raw_mediastinum = raw[int(64 * sy):int(128 * sy), int(112 * sx):int(144 * sx)].mean()
    assert raw_lung > raw_mediastinum


def test_multiframe_mr_is_one_volume_of_its_frames(dicom_file):
    path = dicom_file("emri_small.dcm")
    frames = pydicom.dcmread(path).pixel_array.astype(np.float32)
    assert frames.shape == (10, 64, 64)
    vol = load_images(path, raw_spec(10, 64, 64))
    np.testing.assert_array_equal(vol.images[0, 0], frames)
    sliced = load_images(path, raw_spec(64, 64, max_slices_per_volume=4))
    assert sliced.images.shape == (4, 1, 64, 64)
    for img in sliced.images[:, 0]:                          # every slice is one of the real frames
        assert any(np.array_equal(img, f) for f in frames)


def test_dicom_series_folder_becomes_one_volume_sorted_by_position(ct_series, dicom_file):
    folder, intercepts = ct_series
    raw = pydicom.dcmread(dicom_file("CT_small.dcm")).pixel_array.astype(np.float32)
    data = load_images(folder, raw_spec(5, 128, 128))
    assert data.images.shape == (1, 1, 5, 128, 128)
    for k, intercept in enumerate(intercepts):
        np.testing.assert_array_equal(data.images[0, 0, k], raw + intercept)
    (rec,) = data.records
    assert rec.format == "dicom" and rec.shape == (5, 128, 128) and len(set(rec.sha256)) == 5
    assert rec.spacing == pytest.approx((2.5, 0.661468, 0.661468))


def test_nifti_4d_gives_one_volume_per_time_point_in_zyx_order():
    nib = pytest.importorskip("nibabel")
    path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    data4d = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    x, y, z, t = data4d.shape
    got = load_images(path, raw_spec(z, y, x))
    assert got.images.shape == (t, 1, z, y, x) and got.records[0].volumes == t
    np.testing.assert_array_equal(got.images[1, 0], data4d[..., 1].T)


def test_nrrd_and_nifti_of_one_scan_read_identically(tmp_path, pyradiomics):
    sitk = pytest.importorskip("SimpleITK")
    nrrd = pyradiomics / "brain1_image.nrrd"
    nifti = tmp_path / "brain1.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(nrrd)), str(nifti))
    (a,) = read_unit("nrrd", (nrrd,))
    (b,) = read_unit("nifti", (nifti,))
    assert a.array.shape == (1, 25, 256, 256)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-3)
    assert a.spacing == pytest.approx((6.5, 0.78125, 0.78125))
    spec = PreprocessSpec(spatial_size=(32, 64, 64), orientation="RAS", spacing=(4.0, 4.0, 4.0))
    np.testing.assert_allclose(load_images(nrrd, spec).images, load_images(nifti, spec).images, atol=1e-5)


def test_orientation_ras_puts_left_to_right_on_the_first_axis(pyradiomics):
    img = load_images(pyradiomics / "brain1_image.nrrd",
                      raw_spec(256, 256, 25, orientation="RAS", fit="pad_crop")).images
    assert img.shape == (1, 1, 256, 256, 25)


def test_png_and_jpeg_of_a_real_slice(tmp_path, dicom_file):
    Image = pytest.importorskip("PIL.Image")
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    grey = (ds.pixel_array / ds.pixel_array.max() * 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "mr.png")
    Image.fromarray(grey).convert("RGB").save(tmp_path / "mr.jpg", quality=95)
    png = load_images(tmp_path / "mr.png", raw_spec(64, 64))
    np.testing.assert_array_equal(png.images[0, 0], grey)
    jpg = load_images(tmp_path / "mr.jpg", raw_spec(64, 64))   # RGB to a 1-channel model: luminance
    assert jpg.images.shape == (1, 1, 64, 64)
    assert np.abs(jpg.images[0, 0] - grey).mean() < 3.0      # JPEG loss only
    three = load_images(tmp_path / "mr.png", PreprocessSpec(spatial_size=(32, 32), channels=3))
    assert three.images.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(three.images[0, 0], three.images[0, 2])


def test_npy_and_npz_volumes(tmp_path, pyradiomics):
    sitk = pytest.importorskip("SimpleITK")
    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(pyradiomics / "breast1_image.nrrd"))).astype(np.float32)
    np.save(tmp_path / "breast.npy", vol)
    np.savez(tmp_path / "breast.npz", image=vol, other=np.zeros(3))
    a = load_images(tmp_path / "breast.npy", raw_spec(*vol.shape)).images
    b = load_images(tmp_path / "breast.npz", raw_spec(*vol.shape)).images
    np.testing.assert_array_equal(a[0, 0], vol)
    np.testing.assert_array_equal(b, a)


def test_palette_colour_ultrasound_reads_as_rgb_through_its_lookup_table(dicom_file):
    from pydicom.pixels import apply_color_lut

    path = dicom_file("OBXXXX1A.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    got = load_images(path, raw_spec(600, 800, channels=3)).images[0]
    np.testing.assert_array_equal(got, np.moveaxis(apply_color_lut(ds.pixel_array, ds), -1, 0))
    assert np.abs(got[0] - got[2]).max() > 1000               # real colour, not one index repeated three times


@pytest.mark.parametrize("layout", [(64, 64), (1, 64, 64), (64, 64, 1), (1, 1, 64, 64)])
def test_2d_npy_with_or_without_a_channel_axis_is_one_2d_image(tmp_path, dicom_file, layout):
    grey = pydicom.dcmread(dicom_file("MR_small.dcm")).pixel_array.astype(np.float32)
    np.save(tmp_path / "mr.npy", grey.reshape(layout))
    got = load_images(tmp_path / "mr.npy", raw_spec(64, 64))
    assert got.images.shape == (1, 1, 64, 64) and got.records[0].shape == (64, 64)
    np.testing.assert_array_equal(got.images[0, 0], grey)
    with pytest.raises(DataError, match=r"is 3D but mr\.npy is a 2D image"):   # never stretched into a volume
        load_images(tmp_path / "mr.npy", raw_spec(8, 64, 64))


@pytest.mark.parametrize("layout", ["CDHW", "DHWC", "DHW", "NCDHW"])
def test_3d_npy_with_or_without_a_channel_axis_is_one_volume(tmp_path, pyradiomics, layout):
    sitk = pytest.importorskip("SimpleITK")
    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(pyradiomics / "breast1_image.nrrd"))).astype(np.float32)
    saved = {"CDHW": vol[None], "DHWC": vol[..., None], "DHW": vol, "NCDHW": vol[None, None]}[layout]
    np.save(tmp_path / "breast.npy", saved)
    got = load_images(tmp_path / "breast.npy", raw_spec(*vol.shape))
    assert got.images.shape == (1, 1, *vol.shape)
    np.testing.assert_array_equal(got.images[0, 0], vol)


def test_an_array_of_no_image_shape_is_refused_with_its_shape(tmp_path, dicom_file):
    grey = pydicom.dcmread(dicom_file("MR_small.dcm")).pixel_array.astype(np.float32)
    np.save(tmp_path / "mr.npy", grey)
    np.save(tmp_path / "stack.npy", np.stack([grey[None]] * 2))            # (2, 1, 64, 64): which axis is what?
    with pytest.warns(DataWarning, match=r"stack\.npy \(a NumPy array of shape \(2, 1, 64, 64\) is not an image"):
        data = load_images(tmp_path, raw_spec(64, 64))
    assert len(data) == 1
