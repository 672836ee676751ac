"""The three transforms of the activation-map compression paper (Vu et al., TMLR 2024), each orthogonal so the
thresholded coefficients reconstruct by the transpose: block DCT-II, multi-level Haar wavelet, and none (simple
thresholding). They act on the spatial axes of (B, C, *spatial) tensors, 2D or 3D alike.

    coeffs = TRANSFORMS["dct"].forward(x); x_again = TRANSFORMS["dct"].inverse(coeffs)

The DCT works on 16-long blocks along each spatial axis (the paper's 16x16 blocks; 16x16x16 in 3D), applied as a
matmul with a block-diagonal orthonormal DCT-II basis (torch has no DCT; a basis matrix keeps it on the tensor's
device and in autograd-free torch). An axis whose length is not a multiple of 16 ends in one shorter block with its
own DCT, so no padding adds coefficients. The Haar wavelet is written here in a few lines of torch (PyWavelets is
numpy-only and not installed; Haar needs only sums and differences): three levels of the pyramid decomposition
(the paper's Figure 1), each level splitting the current low band along every spatial axis at once (one 2^d x 2^d
matrix on every 2 x 2 (x 2) cell), stopping early where an axis of the low band is odd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

DCT_BLOCK = 16
HAAR_LEVELS = 3


@dataclass(frozen=True)
class Transform:
    """``forward`` maps activations to coefficients of the same shape; ``inverse`` undoes it."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@lru_cache(maxsize=64)
def _dct_basis(n: int, block: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """Block-diagonal orthonormal DCT-II matrix of size n x n (rows: frequencies), blocks of ``block`` and one
    shorter last block where ``block`` does not divide ``n``."""
    basis = torch.zeros(n, n, dtype=torch.float64)
    for start in range(0, n, block):
        m = min(block, n - start)
        k = torch.arange(m, dtype=torch.float64)[:, None]
        u = torch.arange(m, dtype=torch.float64)[None, :]
        b = torch.cos(math.pi * (2 * u + 1) * k / (2 * m)) * math.sqrt(2 / m)
        b[0] /= math.sqrt(2)
        basis[start:start + m, start:start + m] = b
    return basis.to(dtype=dtype, device=device)


def _along_spatial(x: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The basis applied along every spatial axis as one broadcast matmul each, on views (no axis moves)."""
    shape = x.shape
    for axis in range(2, x.ndim):
        n = shape[axis]
        basis = _dct_basis(n, DCT_BLOCK, x.dtype, str(x.device))
        basis = basis.T if transposed else basis
        if axis == x.ndim - 1:
            x = (x.reshape(-1, n) @ basis.T).reshape(shape)
        else:
            x = (basis @ x.reshape(math.prod(shape[:axis]), n, math.prod(shape[axis + 1:]))).reshape(shape)
    return x


def dct_forward(x: torch.Tensor) -> torch.Tensor:
    return _along_spatial(x, transposed=False)


def dct_inverse(y: torch.Tensor) -> torch.Tensor:
    return _along_spatial(y, transposed=True)


def _haar_levels(shape: tuple[int, ...]) -> int:
    levels, spatial = 0, list(shape)
    while levels < HAAR_LEVELS and all(s % 2 == 0 and s >= 2 for s in spatial):
        spatial = [s // 2 for s in spatial]
        levels += 1
    return levels


@lru_cache(maxsize=16)
def _haar_matrix(dims: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The one-level Haar transform of a 2 x 2 (x 2) cell: the Kronecker power of [[1, 1], [1, -1]] / sqrt(2)
    (rows: low/high along the first spatial axis, then the next, ...)."""
    pair = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / math.sqrt(2)
    matrix = pair
    for _ in range(dims - 1):
        matrix = torch.kron(matrix, pair)
    return matrix.to(dtype=dtype, device=device)


def _haar_level(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    """One level along every spatial axis at once, low half first along each axis: the cells gathered into one
    (P, 2^d, cells) view, one small matmul, and laid back out (two copies and a matmul instead of a sum, a
    difference, two scalings and a concatenation per axis)."""
    maps, half = math.prod(x.shape[:2]), [s // 2 for s in x.shape[2:]]
    d = len(half)
    matrix = _haar_matrix(d, x.dtype, str(x.device))
    cell_axes, band_axes = list(range(2, 2 * d + 1, 2)), list(range(1, 2 * d, 2))   # in (P, n0/2, 2, n1/2, 2, ..)
    if inverse:
        matrix, cell_axes, band_axes = matrix.T, band_axes, cell_axes                 # from (P, 2, n0/2, 2, ..)
    split = [v for h in half for v in ((h, 2) if not inverse else (2, h))]
    grouped = x.reshape(maps, *split).permute(0, *cell_axes, *band_axes).reshape(maps, 2 ** d, -1)
    y = (matrix @ grouped).reshape(maps, *[2] * d, *half)
    order = [v for i in range(d) for v in ((1 + i, 1 + d + i) if not inverse else (1 + d + i, 1 + i))]
    return y.permute(0, *order).reshape(x.shape)


def _low_band(shape: tuple[int, ...], level: int) -> tuple[slice, ...]:
    return (slice(None), slice(None)) + tuple(slice(0, s >> level) for s in shape[2:])


def haar_forward(x: torch.Tensor) -> torch.Tensor:
    levels = _haar_levels(x.shape[2:])
    if levels == 0:
        return x.clone()
    y = _haar_level(x, inverse=False)
    for level in range(1, levels):
        band = _low_band(x.shape, level)
        y[band] = _haar_level(y[band], inverse=False)
    return y


def haar_inverse(y: torch.Tensor) -> torch.Tensor:
    levels = _haar_levels(y.shape[2:])
    if levels == 0:
        return y.clone()
    x = y.clone() if levels > 1 else y
    for level in reversed(range(1, levels)):
        band = _low_band(y.shape, level)
        x[band] = _haar_level(x[band], inverse=True)
    return _haar_level(x, inverse=True)


TRANSFORMS: dict[str, Transform] = {
    "dct": Transform("dct", dct_forward, dct_inverse),
    "wavelet": Transform("wavelet", haar_forward, haar_inverse),
    "threshold": Transform("threshold", _identity, _identity),
}
