"""The three transforms of the activation-map compression paper (Vu et al., TMLR 2024), each orthogonal so the
thresholded coefficients reconstruct by the transpose: block DCT-II, multi-level Haar wavelet, and none (simple
thresholding). They act on the spatial axes of (B, C, *spatial) tensors, 2D or 3D alike.

    coeffs = TRANSFORMS["dct"].forward(x); x_again = TRANSFORMS["dct"].inverse(coeffs)

The DCT works on 16-long blocks along each spatial axis (the paper's 16x16 blocks; 16x16x16 in 3D), applied as a
matmul with a block-diagonal orthonormal DCT-II basis (torch has no DCT; a basis matrix keeps it on the tensor's
device and in autograd-free torch). An axis whose length is not a multiple of 16 ends in one shorter block with its
own DCT, so no padding adds coefficients. The Haar wavelet is written here in a few lines of torch (PyWavelets is
numpy-only and not installed; Haar needs only sums and differences): three levels of the pyramid decomposition
(the paper's Figure 1), each level splitting the current low band along every spatial axis at once (one stride-2
convolution with the 2^d orthonormal cell filters), stopping early where an axis of the low band is odd.
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
    """The basis applied along every spatial axis as one broadcast matmul each, on views (no axis moves). Where
    the blocks divide the axis, the axis is viewed as (blocks, 16) and only the 16 x 16 basis is applied: the same
    products without the block-diagonal matrix's zeros (a 48-long axis: a third of the work)."""
    shape = x.shape
    for axis in range(2, x.ndim):
        n = shape[axis]
        m = DCT_BLOCK if n % DCT_BLOCK == 0 else n
        basis = _dct_basis(m, DCT_BLOCK, x.dtype, str(x.device))
        basis = basis.T if transposed else basis
        if axis == x.ndim - 1:
            x = (x.reshape(-1, m) @ basis.T).reshape(shape)
        else:
            x = (basis @ x.reshape(math.prod(shape[:axis]) * (n // m), m, math.prod(shape[axis + 1:]))).reshape(shape)
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
def _haar_kernel(dims: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The one-level Haar transform of a 2 x 2 (x 2) cell as a (2^d, 1, 2, 2(, 2)) convolution kernel: output
    channel j is row j of the Kronecker power of [[1, 1], [1, -1]] / sqrt(2) (low/high along the first spatial
    axis, then the next, ...)."""
    pair = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / math.sqrt(2)
    matrix = pair
    for _ in range(dims - 1):
        matrix = torch.kron(matrix, pair)
    return matrix.reshape(2 ** dims, 1, *[2] * dims).to(dtype=dtype, device=device)


_CONV = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}


def _haar_cells(bands: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The inverse of one level: (maps, 2^d, *half) coefficients back to (maps, 1, *spatial) values, as the
    transposed cell matrix on the channels and the cells laid back into place (a matmul and one copy; torch's
    conv_transpose with stride 2 takes about 6x as long on CPU)."""
    maps, cells, half = bands.shape[0], bands.shape[1], bands.shape[2:]
    d = len(half)
    values = (kernel.reshape(cells, cells).T @ bands.reshape(maps, cells, -1)).view(maps, *[2] * d, *half)
    order = [v for i in range(d) for v in (1 + d + i, 1 + i)]                 # (maps, half0, 2, half1, 2, ...)
    return values.permute(0, *order).reshape(maps, 1, *[2 * h for h in half])


def haar_forward(x: torch.Tensor) -> torch.Tensor:
    """Each level is one stride-2 convolution of the current low band with the 2^d cell filters, written in place
    of that band as (maps, 2^d, *half) with the next low band its channel 0; the coefficients sit in another order
    than the textbook pyramid's, which changes neither their values nor top-k nor the reconstruction."""
    levels, spatial = _haar_levels(x.shape[2:]), x.shape[2:]
    if levels == 0:
        return x.clone()
    conv = _CONV[len(spatial)]
    kernel = _haar_kernel(len(spatial), x.dtype, str(x.device))
    y = conv(x.reshape(-1, 1, *spatial), kernel, stride=2)
    low = y[:, :1]
    for _ in range(1, levels):
        low.copy_(conv(low, kernel, stride=2).reshape(low.shape))
        low = low.view(low.shape[0], 2 ** len(spatial), *[s // 2 for s in low.shape[2:]])[:, :1]
    return y.reshape(x.shape)


def haar_inverse(y: torch.Tensor) -> torch.Tensor:
    levels, spatial = _haar_levels(y.shape[2:]), y.shape[2:]
    if levels == 0:
        return y.clone()
    kernel = _haar_kernel(len(spatial), y.dtype, str(y.device))
    cells = 2 ** len(spatial)
    bands = [y.reshape(-1, cells, *[s // 2 for s in spatial]).clone()]   # the caller's coefficients stay intact
    for _ in range(1, levels):
        low = bands[-1][:, :1]
        bands.append(low.view(low.shape[0], cells, *[s // 2 for s in low.shape[2:]]))
    for level in reversed(range(1, levels)):
        bands[level - 1][:, :1] = _haar_cells(bands[level], kernel)
    return _haar_cells(bands[0], kernel).reshape(y.shape)


TRANSFORMS: dict[str, Transform] = {
    "dct": Transform("dct", dct_forward, dct_inverse),
    "wavelet": Transform("wavelet", haar_forward, haar_inverse),
    "threshold": Transform("threshold", _identity, _identity),
}
