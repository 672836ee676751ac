"""DICOM with pydicom: single images, multi-frame files and slice series assembled into one volume.

Pixels get the modality LUT (RescaleSlope/Intercept) and MONOCHROME1 is inverted so bright means
dense everywhere. Tags are read here and dropped here: only pixels and geometry leave this module.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from medexport.imaging._image import LPS_TO_RAS, RawImage, diagonal_affine

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def is_dicom(path: Path) -> bool:
    """True for a DICOM suffix or, for suffix-less files as PACS exports them, the 'DICM' preamble."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix or path.name.upper() == "DICOMDIR":  # a DICOMDIR indexes a CD; it holds no pixels
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def group_series(paths: Sequence[Path]) -> tuple[list[tuple[Path, ...]], list[Path]]:
    """Group single-frame slices of one series into volumes; other files stay alone.

    Returns (units, unreadable): each unit is a tuple of paths (one file, or a series in any order).
    Slices are grouped by series and pixel grid; a group whose slices share one position is not a
    volume (e.g. copies of one X-ray) and stays as separate images.
    """
    import pydicom

    groups: dict[tuple, list[tuple[Path, tuple | None]]] = defaultdict(list)
    units: list[tuple[Path, ...]] = []
    unreadable: list[Path] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            rows, cols = int(ds.Rows), int(ds.Columns)
        except Exception:  # any parse failure means this file cannot be used; the caller reports it
            unreadable.append(path)
            continue
        series = ds.get("SeriesInstanceUID")
        if series is None or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            units.append((path,))
            continue
        ipp = ds.get("ImagePositionPatient")
        groups[(str(series), rows, cols)].append((path, tuple(float(v) for v in ipp) if ipp else None))
    for members in groups.values():
        positions = {pos for _, pos in members}
        if len(members) > 1 and len(positions) > 1:
            units.append(tuple(p for p, _ in members))
        else:
            units.extend((p,) for p, _ in members)
    units.sort(key=lambda u: str(u[0]))
    return units, unreadable


def read_dicom(paths: tuple[Path, ...]) -> list[RawImage]:
    """Read one DICOM file (2D or multi-frame) or a series of single-frame slices as one volume."""
    import pydicom

    if len(paths) == 1:
        ds = pydicom.dcmread(paths[0])
        return [_single(ds)]
    return [_series([pydicom.dcmread(p) for p in paths])]


def _pixels(ds) -> np.ndarray:
    """Modality-LUT pixels as float32, colour last (pydicom layout)."""
    from pydicom.pixels import apply_modality_lut

    arr = ds.pixel_array
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        arr = apply_modality_lut(arr, ds)
    return np.asarray(arr, dtype=np.float32)


def _invert_if_monochrome1(arr: np.ndarray, ds) -> np.ndarray:
    # Mirror within the image's own range so values stay in the same units' span.
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        return (arr.max() + arr.min()) - arr
    return arr


def _in_plane_spacing(ds) -> tuple[float, float]:
    """(row, column) spacing in mm; X-rays often carry only ImagerPixelSpacing; unknown means 1 mm."""
    candidates = [ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing")]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and "PixelMeasuresSequence" in shared[0]:
        candidates.insert(0, shared[0].PixelMeasuresSequence[0].get("PixelSpacing"))
    for value in candidates:
        if value is not None and len(value) == 2 and min(float(v) for v in value) > 0:
            return float(value[0]), float(value[1])
    return 1.0, 1.0


def _single(ds) -> RawImage:
    arr = _invert_if_monochrome1(_pixels(ds), ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = int(ds.get("SamplesPerPixel", 1)) > 1
    if colour:
        arr = np.moveaxis(arr, -1, 0)  # (H, W, 3) or (F, H, W, 3) -> channels first
    else:
        arr = arr[None]
    row, col = _in_plane_spacing(ds)
    if frames > 1:
        step = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        return RawImage(arr, diagonal_affine((step if step > 0 else 1.0, row, col)))
    return RawImage(arr, diagonal_affine((row, col)))


def _series(slices: list) -> RawImage:
    """Stack slices sorted along the slice normal (ImagePositionPatient), else by InstanceNumber."""
    first = slices[0]
    iop = first.get("ImageOrientationPatient")
    have_pos = iop is not None and all(s.get("ImagePositionPatient") is not None for s in slices)
    if have_pos:
        row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
        normal = np.cross(row_dir, col_dir)
        pos = np.array([np.dot(np.asarray(s.ImagePositionPatient, float), normal) for s in slices])
        order = np.argsort(pos, kind="stable")
        diffs = np.diff(pos[order])
        step = float(np.median(diffs)) if len(diffs) else 0.0
    else:
        order = np.argsort([int(s.get("InstanceNumber") or 0) for s in slices], kind="stable")
        step = 0.0
    if step <= 0:
        step = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    ordered = [slices[i] for i in order]
    vol = np.stack([_pixels(s) for s in ordered])
    vol = _invert_if_monochrome1(vol, first)[None]
    row, col = _in_plane_spacing(first)
    if not have_pos:
        return RawImage(vol, diagonal_affine((step, row, col)))
    lps = np.eye(4)
    # Array axes are (slice, row, column); a column index moves along the row direction.
    lps[:3, 0] = normal * step
    lps[:3, 1] = col_dir * row
    lps[:3, 2] = row_dir * col
    lps[:3, 3] = np.asarray(ordered[0].ImagePositionPatient, float)
    return RawImage(vol, LPS_TO_RAS @ lps)
