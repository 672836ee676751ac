"""Readers for every supported format, all returning :class:`RawImage` in one (C, z, y, x) convention.

NIfTI arrays (x, y, z) are reversed to (z, y, x) so a volume reads the same from NIfTI, NRRD or a
DICOM series; ``slice_axis=0`` is then the acquisition's slice direction in all three.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medexport.imaging._dicom import is_dicom, read_dicom
from medexport.imaging._image import RawImage, Unusable, affine_from_itk, diagonal_affine

_SUFFIX_FORMATS = {
    ".nii": "nifti", ".nii.gz": "nifti",
    ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "nrrd", ".mhd": "nrrd",
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg",
    ".npy": "npy", ".npz": "npz",
}
_MAX_CHANNELS = 4  # NumPy arrays: an axis this short is a channel axis (grey, RGB, RGBA, up to 4 MRI contrasts)


def detect_format(path: Path) -> str | None:
    """Format name of a file by suffix (or DICOM preamble), None when unsupported."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return "nifti"
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    return "dicom" if is_dicom(path) else None


def read_unit(fmt: str, paths: tuple[Path, ...]) -> list[RawImage]:
    """Read one source (a file, or the slices of one DICOM series) into one or more images.

    A 4D NIfTI gives one image per time point; every other source gives exactly one.
    """
    if fmt == "dicom":
        return read_dicom(paths)
    (path,) = paths
    return _READERS[fmt](path)


def _read_nifti(path: Path) -> list[RawImage]:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise ValueError(f"unsupported NIfTI rank {data.ndim}")
    affine = np.asarray(img.affine, dtype=float).copy()
    affine[:, :3] = affine[:, :3][:, ::-1]  # index columns follow the reversed axes
    return [RawImage(np.ascontiguousarray(data[..., t].transpose(2, 1, 0))[None], affine)
            for t in range(data.shape[3])]


def _read_itk(path: Path) -> list[RawImage]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    comps = img.GetNumberOfComponentsPerPixel()
    arr = np.moveaxis(arr, -1, 0) if comps > 1 else arr[None]
    affine = affine_from_itk(img.GetOrigin(), img.GetSpacing(), img.GetDirection())
    return [RawImage(np.ascontiguousarray(arr), affine)]


def _read_pil(path: Path) -> list[RawImage]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I", "F", "L"):
            arr = np.asarray(im, dtype=np.float32)[None]
        else:
            arr = np.moveaxis(np.asarray(im.convert("RGB"), dtype=np.float32), -1, 0)
    return [RawImage(np.ascontiguousarray(arr), diagonal_affine((1.0, 1.0)))]


def _read_numpy(path: Path) -> list[RawImage]:
    # allow_pickle=False: a calibration folder must not be able to run code.
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise Unusable("holds pickled Python objects, which medexport never loads") from None
        raise
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            key = "image" if "image" in loaded.files else loaded.files[0]
            arr = loaded[key]
    else:
        arr = loaded
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise Unusable(f"holds a {arr.dtype} array, not image pixels")
    arr = numpy_layout(np.asarray(arr, dtype=np.float32))
    return [RawImage(arr, diagonal_affine((1.0,) * (arr.ndim - 1)))]


def numpy_layout(arr: np.ndarray) -> np.ndarray:
    """An array as users save images, as ``(C, *spatial)``; a channel axis has at most 4 entries.

    ``(H, W)``; ``(C, H, W)`` or ``(H, W, C)``: 2D. ``(D, H, W)`` (no axis of <= 4): 3D, one channel.
    ``(C, D, H, W)`` or ``(D, H, W, C)``: 3D. A leading batch axis of one, as a model input is shaped,
    is dropped first: ``(1, C, H, W)`` with C <= 4 and ``(1, C, D, H, W)``. Anything else is :class:`Unusable`.
    """
    shape = arr.shape
    if arr.size == 0:
        raise Unusable(f"an empty NumPy array of shape {tuple(shape)}")
    if (arr.ndim == 4 and shape[0] == 1 and shape[1] <= _MAX_CHANNELS) or (arr.ndim == 5 and shape[0] == 1):
        arr, shape = arr[0], shape[1:]
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim in (3, 4) and min(shape[1:]) > _MAX_CHANNELS >= shape[0]:
        return arr
    if arr.ndim in (3, 4) and min(shape[:-1]) > _MAX_CHANNELS >= shape[-1]:
        return np.ascontiguousarray(np.moveaxis(arr, -1, 0))
    if arr.ndim == 3 and min(shape) > _MAX_CHANNELS:
        return arr[None]
    raise Unusable(f"a NumPy array of shape {tuple(shape)} is not an image: expected (H, W), (C, H, W), (H, W, C), "
                   f"(D, H, W), (C, D, H, W) or (D, H, W, C) with C <= {_MAX_CHANNELS}")


_READERS = {
    "nifti": _read_nifti,
    "nrrd": _read_itk,
    "png": _read_pil,
    "jpeg": _read_pil,
    "npy": _read_numpy,
    "npz": _read_numpy,
}
