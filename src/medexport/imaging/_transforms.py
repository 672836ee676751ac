"""Apply a :class:`PreprocessSpec` to a :class:`RawImage` with MONAI transforms.

Order: orientation and spacing on the whole volume, intensity on the whole volume (so slices of
one scan share one scale), then slice selection, then resize/pad to the model's size.
"""
from __future__ import annotations

import warnings

import numpy as np

from medexport.imaging._image import RawImage
from medexport.imaging.spec import PreprocessSpec

_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
# A slice is near-empty when under 1% of its pixels exceed 10% of the volume's robust range.
_FOREGROUND_LEVEL = 0.10
_FOREGROUND_MIN_FRACTION = 0.01


def resample(img: RawImage, spec: PreprocessSpec, *, label: bool = False) -> RawImage:
    """Reorient (3D only) and resample to ``spec.spacing``; nearest-neighbour for label masks."""
    if spec.orientation is None and spec.spacing is None:
        return img
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    mt = MetaTensor(torch.from_numpy(img.array), affine=torch.from_numpy(img.affine))
    if spec.orientation is not None and img.spatial_ndim == 3:
        mt = Orientation(axcodes=spec.orientation, labels=_RAS_LABELS)(mt)
    if spec.spacing is not None:
        pixdim = list(spec.spacing)
        if spec.ndim == 2 and img.spatial_ndim == 3:
            pixdim.insert(spec.slice_axis, 0.0)  # 0 keeps the slice direction's own spacing
        mode = "nearest" if label else "bilinear"
        mt = Spacing(pixdim=pixdim, mode=mode, padding_mode="border")(mt)
    return RawImage(np.ascontiguousarray(mt.numpy(), dtype=np.float32), mt.affine.numpy().astype(float))


def scale_intensity(arr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Scale one image (a whole volume) to [0, 1] as the spec says; 'none' leaves values as read."""
    from monai.transforms import ScaleIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

    if spec.intensity == "percentile":
        lo, hi = spec.percentiles
        tf = ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)
    elif spec.intensity == "window":
        center, width = spec.window
        tf = ScaleIntensityRange(a_min=center - width / 2, a_max=center + width / 2, b_min=0.0, b_max=1.0, clip=True)
    elif spec.intensity == "minmax":
        tf = ScaleIntensity(minv=0.0, maxv=1.0)
    else:
        return arr
    with warnings.catch_warnings():
        # A constant image (e.g. an empty mask) has low == high; clipping below gives it a defined value.
        warnings.filterwarnings("ignore", message="Divide by zero")
        out = np.asarray(tf(arr), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def informative_slices(arr: np.ndarray, axis: int) -> np.ndarray:
    """Indices of slices along spatial ``axis`` that are not near-empty (all slices if none qualify)."""
    sample = arr.reshape(-1)[:: max(1, arr.size // 1_000_000)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    level = lo + _FOREGROUND_LEVEL * (hi - lo)
    spatial = np.moveaxis(arr, axis + 1, 0)  # (slices, C, ...)
    fraction = (spatial > level).reshape(spatial.shape[0], -1).mean(axis=1)
    keep = np.flatnonzero(fraction >= _FOREGROUND_MIN_FRACTION) if hi > lo else np.array([], dtype=int)
    return keep if keep.size else np.arange(spatial.shape[0])


def take_slices(arr: np.ndarray, axis: int, index: np.ndarray) -> np.ndarray:
    """(C, *3D) volume -> (K, C, *2D) slices at ``index`` along spatial ``axis``."""
    return np.moveaxis(np.take(arr, index, axis=axis + 1), axis + 1, 0)


def fit_size(batch: np.ndarray, spec: PreprocessSpec, *, label: bool = False) -> np.ndarray:
    """(K, C, *spatial) -> (K, C, *spec.spatial_size) by resizing or centre pad/crop."""
    from monai.transforms import Resize, ResizeWithPadOrCrop

    if tuple(batch.shape[2:]) == tuple(spec.spatial_size):
        return batch
    k, c = batch.shape[:2]
    flat = batch.reshape(k * c, *batch.shape[2:])  # one call for every slice: channels are independent
    if spec.fit == "pad_crop":
        tf = ResizeWithPadOrCrop(spatial_size=spec.spatial_size)
    elif label:
        tf = Resize(spatial_size=spec.spatial_size, mode="nearest")
    else:
        mode = "bilinear" if spec.ndim == 2 else "trilinear"
        tf = Resize(spatial_size=spec.spatial_size, mode=mode, anti_aliasing=True)
    out = np.asarray(tf(flat), dtype=np.float32)
    return out.reshape(k, c, *spec.spatial_size)


def match_channels(batch: np.ndarray, channels: int) -> np.ndarray | None:
    """Repeat grey to ``channels``, or RGB to luminance for 1-channel models; None if they cannot match."""
    c = batch.shape[1]
    if c == channels:
        return batch
    if c == 1:
        return np.repeat(batch, channels, axis=1)
    if c == 3 and channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma
        return np.tensordot(batch, weights, axes=([1], [0]))[:, None].astype(np.float32)
    return None
