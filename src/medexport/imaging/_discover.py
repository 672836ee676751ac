"""Turn a folder, a file or a list of them into sources: one file, or the slices of one DICOM series."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medexport.imaging._dicom import group_series
from medexport.imaging.readers import detect_format
from medexport.errors import DataError

SUPPORTED = "DICOM, NIfTI (.nii/.nii.gz), NRRD/MHA, PNG, JPEG, NPY/NPZ"


@dataclass(frozen=True)
class Unit:
    """One source of images: a format and its file(s); a DICOM series has several files."""

    format: str
    paths: tuple[Path, ...]

    @property
    def label(self) -> str:
        """How an error message names this source: the file name, or the first file of a series."""
        name = self.paths[0].name
        return name if len(self.paths) == 1 else f"{name} (series of {len(self.paths)} files)"


def discover(source: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[Unit], list[tuple[Path, str]]]:
    """Sources found under ``source`` in path order, and the DICOM files refused from their header, each with why
    (unreadable, or not an image: SEG, RTSTRUCT, SR, ...)."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise DataError("no image source given: pass a folder, a file or a list of files")
    files: list[tuple[Path, str]] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise DataError(f"image source does not exist: {path}")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
            found = [(p, fmt) for p in found if (fmt := detect_format(p)) is not None]
            if not found:
                raise DataError(f"folder {path} holds no supported image files ({SUPPORTED})")
            files.extend(found)
        elif (fmt := detect_format(path)) is None:
            raise DataError(f"unsupported image file {path.name}: expected {SUPPORTED}")
        else:
            files.append((path, fmt))
    dicom = [p for p, fmt in files if fmt == "dicom"]
    units = [Unit(fmt, (p,)) for p, fmt in files if fmt != "dicom"]
    series, refused = group_series(dicom) if dicom else ([], [])
    units.extend(Unit("dicom", paths) for paths in series)
    units.sort(key=lambda u: str(u.paths[0]))
    return units, refused
