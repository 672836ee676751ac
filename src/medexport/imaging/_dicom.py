"""DICOM with pydicom: single images, multi-frame files and slice series assembled into one volume.

Pixels get the modality LUT (RescaleSlope/Intercept), PALETTE COLOR gets its colour lookup table (so
palette ultrasound reads as RGB) and MONOCHROME1 is inverted so bright means dense everywhere. Objects
that are not images (SEG, RTSTRUCT, SR, ...) and pixel data no installed decoder reads are refused with
a reason. Tags are read here and dropped here: only pixels, geometry and reasons leave this module.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from medexport.imaging._image import LPS_TO_RAS, RawImage, Unusable, diagonal_affine

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
DECODER_HINT = 'pip install "medexport[dicom]" (python-gdcm, pyjpegls, pylibjpeg-openjpeg)'
# Storage classes that hold no image to calibrate or validate on, even those with pixel data (a SEG's masks, an RT
# dose grid): segmentation/registration/raw data (66.*), RT objects but RT Image (481.*), structured reports and
# key-object selections (88.*), presentation states (11.*), encapsulated documents (104.*) and waveforms (9.*).
_NON_IMAGE_CLASSES = tuple(f"1.2.840.10008.5.1.4.1.1.{n}." for n in ("66", "481", "88", "11", "104", "9"))
_RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"
_NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "KO", "PR", "REG", "DOC"}


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


def group_series(paths: Sequence[Path]) -> tuple[list[tuple[Path, ...]], list[tuple[Path, str]]]:
    """Group single-frame slices of one series into volumes; other files stay alone.

    Returns (units, refused): each unit is a tuple of paths (one file, or a series in any order); each refused
    file comes with the reason it holds no usable image. Slices are grouped by series and pixel grid; a group
    whose slices share one position is not a volume (e.g. copies of one X-ray) and stays as separate images.
    """
    import pydicom

    groups: dict[tuple, list[tuple[Path, tuple | None]]] = defaultdict(list)
    units: list[tuple[Path, ...]] = []
    refused: list[tuple[Path, str]] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # any parse failure means this file cannot be used; the caller reports it
            refused.append((path, f"not a readable DICOM file ({type(exc).__name__})"))
            continue
        reason = _not_an_image(ds)
        if reason is not None:
            refused.append((path, reason))
            continue
        rows, cols = int(ds.Rows), int(ds.Columns)
        series = ds.get("SeriesInstanceUID")
        if series is None or int(ds.get("NumberOfFrames", 1) or 1) > 1 or _colour(ds):
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
    return units, refused


def _not_an_image(ds) -> str | None:
    """Why a dataset (read up to its pixel data) holds no image, or None: by SOP class and modality, then by
    the image size an image carries. The reason quotes the SOP class's standard name and the modality only,
    never a tag that can name a patient."""
    sop = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    kind = f"{_uid_name(sop)}, modality {modality or 'none'}"
    if (sop.startswith(_NON_IMAGE_CLASSES) and sop != _RT_IMAGE) or modality in _NON_IMAGE_MODALITIES:
        return f"not an image ({kind})"
    if ds.get("Rows") is None or ds.get("Columns") is None:
        return f"no image size (Rows/Columns) in its header: truncated, or not an image ({kind})"
    return None


def _uid_name(uid: str) -> str:
    """The standard name of a UID ('Segmentation Storage'), or the UID when pydicom does not know it."""
    from pydicom.uid import UID

    return UID(uid).name if uid else "no SOP class"


def read_dicom(paths: tuple[Path, ...]) -> list[RawImage]:
    """Read one DICOM file (2D or multi-frame) or a series of single-frame slices as one volume.

    Pixel data compressed in a transfer syntax no installed decoder reads is :class:`Unusable`, with the
    package to install in the reason.
    """
    import pydicom

    if len(paths) == 1:
        ds = pydicom.dcmread(paths[0])
        _check_decodable(ds)
        return [_single(ds)]
    slices = [pydicom.dcmread(p) for p in paths]
    for ds in slices:
        _check_decodable(ds)
    return [_series(slices)]


def _check_decodable(ds) -> None:
    from pydicom.pixels import get_decoder

    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # pydicom has no decoder at all for this transfer syntax
        raise Unusable(f"pixel data in {syntax.name}, which pydicom cannot decode") from None
    if not available:
        raise Unusable(f"no decoder installed for its {syntax.name} pixel data: {DECODER_HINT}")


def _colour(ds) -> bool:
    """Whether pixels come out with a colour axis: several samples per pixel, or palette indices to look up."""
    return (int(ds.get("SamplesPerPixel", 1)) > 1
            or str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR")


def _pixels(ds) -> np.ndarray:
    """Modality-LUT pixels as float32, colour last (pydicom layout); palette indices through their colour LUT."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    arr = ds.pixel_array
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif int(ds.get("SamplesPerPixel", 1)) == 1:
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
    if _colour(ds):
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
