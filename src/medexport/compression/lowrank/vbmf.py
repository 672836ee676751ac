"""Rank from analytic empirical variational Bayes matrix factorization (EVBMF, Nakajima et al., JMLR 2013).

EVBMF treats a matrix as low-rank signal plus Gaussian noise of unknown variance, estimates that
variance by a one-dimensional minimisation of the free energy, and keeps the singular values above
the resulting threshold: a rank with no knob to tune. Kim et al. (ICLR 2016) use it on the two
channel unfoldings of a conv weight to pick Tucker-2 ranks. Example::

    rank = evbmf_rank(torch.randn(64, 8) @ torch.randn(8, 576) + 0.01 * torch.randn(64, 576))  # 8
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

_TAU_BAR_FACTOR = 2.5129  # the analytic bound of Nakajima et al. (2013), eq. (27)


def evbmf_rank(matrix: "torch.Tensor | np.ndarray") -> int:
    """Number of singular values EVBMF keeps in ``matrix`` (at least 1)."""
    y = np.asarray(matrix.detach().double() if hasattr(matrix, "detach") else matrix, dtype=np.float64)
    if y.shape[0] > y.shape[1]:
        y = y.T
    return max(1, _evbmf_rank_wide(y))


def _evbmf_rank_wide(y: np.ndarray) -> int:
    from scipy.optimize import minimize_scalar

    rows, cols = y.shape  # rows <= cols
    alpha = rows / cols
    s = np.linalg.svd(y, compute_uv=False)
    s2 = s**2
    if not s2.sum() > 0:
        return 0
    tau_bar = _TAU_BAR_FACTOR * np.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    h_ub = int(min(np.ceil(rows / (1 + alpha)) - 1, rows)) - 1
    upper = s2.sum() / (rows * cols)
    lower = max(s2[h_ub + 1] / (cols * x_bar), np.mean(s2[h_ub + 1:]) / cols) if h_ub + 1 < rows else upper / 1e6
    lower = max(min(lower, upper), upper * 1e-12)
    if lower >= upper:
        sigma2 = upper
    else:
        sigma2 = minimize_scalar(_free_energy, args=(rows, cols, s2, x_bar), bounds=(lower, upper),
                                 method="bounded").x
    threshold = np.sqrt(cols * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return int((s > threshold).sum())


def _free_energy(sigma2: float, rows: int, cols: int, s2: np.ndarray, x_bar: float) -> float:
    """EVBMF free energy as a function of the noise variance (up to constants), eq. (30) of the paper."""
    alpha = rows / cols
    x = s2 / (cols * sigma2)
    big, small = x[x > x_bar], x[x <= x_bar]
    tau = 0.5 * (big - (1 + alpha) + np.sqrt((big - (1 + alpha)) ** 2 - 4 * alpha))
    small = np.maximum(small, 1e-300)
    return float(np.sum(small - np.log(small)) + np.sum(big - tau) + np.sum(np.log((tau + 1) / big))
                 + alpha * np.sum(np.log(tau / alpha + 1)))
