"""The in-memory image every reader returns: pixels plus geometry, and nothing that names a patient."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medexport.errors import DataError

# DICOM and ITK store world coordinates in LPS; MONAI and NIfTI use RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class Unusable(DataError):
    """A file that holds no usable image, and why: the loader skips it and reports the reason.

    The reason names no file and no DICOM tag value, so a manifest may count reasons without naming a patient.
    """


@dataclass
class RawImage:
    """Pixels ``(C, *spatial)`` float32, spatial axes ordered (z, y, x) or (y, x) as in DICOM and ITK.

    ``affine`` maps array indices (spatial axes, in array order) to RAS millimetres; for 2D images its
    third column is the unit normal so the 4x4 form is always invertible.
    """

    array: np.ndarray
    affine: np.ndarray

    @property
    def spatial_ndim(self) -> int:
        return self.array.ndim - 1

    @property
    def spacing(self) -> tuple[float, ...]:
        """Millimetres per voxel along each spatial array axis."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(round(float(s), 6) for s in norms[: self.spatial_ndim])


def diagonal_affine(spacing: tuple[float, ...]) -> np.ndarray:
    """Axis-aligned affine for images with only a spacing (PNG, NPY, X-ray): no orientation is implied."""
    full = list(spacing) + [1.0] * (3 - len(spacing))
    return np.diag(full + [1.0])


def affine_from_itk(origin, spacing, direction) -> np.ndarray:
    """RAS affine for a (z, y, x)-ordered array from ITK-style (x, y, z) origin/spacing/direction in LPS."""
    ndim = len(spacing)
    d = np.asarray(direction, dtype=float).reshape(ndim, ndim)
    lps = np.eye(4)
    lps[:ndim, :ndim] = d * np.asarray(spacing, dtype=float)
    lps[:ndim, 3] = origin
    # Reverse the index columns: our array axis a is ITK index axis ndim-1-a.
    lps[:, :ndim] = lps[:, :ndim][:, ::-1]
    if ndim == 2:
        lps[:3, 2] = np.cross(lps[:3, 0], lps[:3, 1]) / max(np.prod(spacing), 1e-12)
    return LPS_TO_RAS @ lps
