"""Random views of the fine-tuning images, so a few real images give many distillation targets.

Only transforms that keep any intensity scale valid (MRI in [0, 1], CT in HU, z-scored data): a flip of
the last spatial axis, a circular shift of up to 1/16 of each spatial size, and an affine intensity change
(gain 0.9-1.1, offset up to 5% of the batch's intensity range). The teacher labels every view itself, so
no transform needs to be label-preserving.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

AUGMENTATIONS = ("flip last axis", "shift <= 1/16 of each axis", "gain 0.9-1.1", "offset <= 5% of range")


def random_view(batch: "torch.Tensor", rng: np.random.Generator) -> "torch.Tensor":
    """One random view of ``batch`` (B, C, *spatial): the same transform for the whole batch (cheap, and the
    batch is already a random draw)."""
    import torch

    spatial = batch.shape[2:]
    x = batch.flip(-1) if rng.random() < 0.5 else batch
    dims = tuple(range(2, batch.ndim))
    shifts = tuple(int(rng.integers(-(s // 16), s // 16 + 1)) for s in spatial)
    x = torch.roll(x, shifts, dims=dims)
    span = float(batch.max() - batch.min()) or 1.0
    return x * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.05, 0.05)) * span


def random_labelled_view(batch: "torch.Tensor", labels: "torch.Tensor",
                         rng: np.random.Generator) -> tuple["torch.Tensor", "torch.Tensor"]:
    """:func:`random_view` for labelled fine-tuning: the flip and the shift move a segmentation mask (B, *spatial)
    with its image; class labels (B,) are left as they are (a flip or small shift keeps the class)."""
    import torch

    spatial = batch.shape[2:]
    flip = rng.random() < 0.5
    shifts = tuple(int(rng.integers(-(s // 16), s // 16 + 1)) for s in spatial)
    x = batch.flip(-1) if flip else batch
    x = torch.roll(x, shifts, dims=tuple(range(2, batch.ndim)))
    if labels.ndim == batch.ndim - 1:   # a mask per image
        y = labels.flip(-1) if flip else labels
        labels = torch.roll(y, shifts, dims=tuple(range(1, labels.ndim)))
    span = float(batch.max() - batch.min()) or 1.0
    return x * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.05, 0.05)) * span, labels


def random_patch(batch: "torch.Tensor", patch: tuple[int, ...] | None, rng: np.random.Generator) -> "torch.Tensor":
    """A random crop of spatial size ``patch`` (the same for the whole batch); ``batch`` itself when ``patch`` is None
    or the images are no larger."""
    if patch is None:
        return batch
    spatial = batch.shape[2:]
    starts = [int(rng.integers(0, max(s - p, 0) + 1)) for s, p in zip(spatial, patch)]
    index = (slice(None), slice(None)) + tuple(slice(a, a + p) for a, p in zip(starts, patch))
    return batch[index]
