"""Real brain MRI resized to any model input, for parity checks of user-supplied models.

Parity between torch and a deployed artifact should be checked on real images, not noise:
activations of random tensors exercise ranges a model never sees. These come from the bundled
held-out data of the reference models (skull-stripped T1, intensities in [0, 1]). Example::

    x = real_inputs((1, 3, 224, 224), n=4)   # (4, 3, 224, 224) float32, grey repeated over RGB
"""
from __future__ import annotations

import numpy as np

from medexport.errors import InputError


def real_inputs(input_shape: tuple[int, ...], n: int = 4) -> np.ndarray:
    """``n`` real T1 images resized (linear) to ``input_shape`` = (batch, C, *spatial), 2D or 3D.

    2D: axial slices of brain-tissue-unet2d's held-out slab, evenly spread (repeated if ``n``
    exceeds the 27 slices; ``n=1`` is the middle one). 3D: ``n`` overlapping crops (3/4 in-plane,
    spread along the diagonal, all 21 slices) of brain-tissue-unet3d's held-out 2 mm slab, so
    a cubic input is stretched along z. The grey image is repeated over the C channels. Returns float32 (n, C, *spatial) in [0, 1].
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (4, 5) or min(shape) < 1:
        raise InputError(f"input_shape must be (batch, C, *spatial) with 2 or 3 positive spatial "
                         f"sizes, got {tuple(input_shape)}")
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    channels, spatial = shape[1], shape[2:]
    grey = _slices(n) if len(spatial) == 2 else _crops(n)
    out = np.stack([_resize(img, spatial) for img in grey])[:, None]
    return np.ascontiguousarray(np.repeat(np.clip(out, 0.0, 1.0), channels, axis=1), dtype=np.float32)


def _slices(n: int) -> list[np.ndarray]:
    from medexport.zoo._registry import get_model

    images = get_model("brain-tissue-unet2d").heldout()[0][:, 0]
    return [images[i] for i in _spread(n, len(images))]


def _crops(n: int) -> list[np.ndarray]:
    from medexport.zoo._registry import get_model

    blocks = get_model("brain-tissue-unet3d").heldout()[0][:, 0]
    slab = np.concatenate(list(blocks), axis=1)   # blocks were cut along the second axis
    x, y, z = slab.shape
    size = [(3 * x) // 4, (3 * y) // 4, z]   # the slab is only 21 slices thick: keep them all
    crops = []
    for t in (np.arange(n) + 0.5) / n:
        start = [int(round(t * (s - c))) for s, c in zip(slab.shape, size)]
        crops.append(slab[tuple(slice(a, a + c) for a, c in zip(start, size))])
    return crops


def _spread(n: int, total: int) -> np.ndarray:
    """``n`` indices into ``total`` items, centred in ``n`` equal parts (distinct while n <= total)."""
    return ((np.arange(n) + 0.5) * total / n).astype(int)


def _resize(img: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    from scipy.ndimage import zoom

    if img.shape == spatial:
        return img
    out = zoom(img, [t / s for t, s in zip(spatial, img.shape)], order=1, mode="nearest")
    if out.shape != spatial:   # zoom rounds the output size; never off by more than one
        raise AssertionError(f"resize produced {out.shape}, wanted {spatial}")
    return out
