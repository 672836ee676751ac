"""Fidelity: how closely a converted model's logits and decisions follow the original's on the same images."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medexport.errors import InputError

TASKS = ("classification", "segmentation")


def fidelity(reference: np.ndarray, candidate: np.ndarray, *, task: str,
             classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Logit errors and decision agreement between two models' logits on the same images.

    Always: ``max_abs_error``, ``mean_abs_error`` and ``max_rel_error`` (max abs error over the
    largest reference magnitude: elementwise ratios explode on near-zero logits).
    Classification adds ``top1_agreement``; segmentation adds ``voxel_agreement`` and
    ``mask_dice``: per foreground class (``classes[0]`` is background), the Dice between the two
    argmax masks pooled over all images, 1.0 where neither model predicts the class.
    """
    if task not in TASKS:
        raise InputError(f"task must be one of {TASKS}, got {task!r}")
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim < 2:
        raise InputError(f"reference and candidate logits must share an (N, K, ...) shape, "
                         f"got {ref.shape} and {cand.shape}")
    err = np.abs(ref - cand)
    scale = float(np.abs(ref).max())
    out: dict[str, Any] = {
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "max_rel_error": float(err.max() / scale) if scale > 0 else (0.0 if err.max() == 0 else float("inf")),
    }
    ref_top, cand_top = ref.argmax(axis=1), cand.argmax(axis=1)
    agreement = float((ref_top == cand_top).mean())
    if task == "classification":
        out["top1_agreement"] = agreement
        return out
    k = ref.shape[1]
    names = [str(c) for c in classes] if classes is not None else [str(c) for c in range(k)]
    if len(names) != k:
        raise InputError(f"{len(names)} class names for {k} output channels")
    out["voxel_agreement"] = agreement
    out["mask_dice"] = dict(zip(names[1:], _pooled_dice(ref_top, cand_top, k)))
    return out


def _pooled_dice(a: np.ndarray, b: np.ndarray, k: int) -> list[float]:
    """Dice per foreground class over all voxels of all images, 1.0 when empty in both.

    Counted with bincount rather than MONAI: a one-hot of every volume at once would not fit in memory.
    """
    both = np.bincount(a[a == b].ravel(), minlength=k)[1:]
    sizes = np.bincount(a.ravel(), minlength=k)[1:] + np.bincount(b.ravel(), minlength=k)[1:]
    return [float(2 * i / s) if s else 1.0 for i, s in zip(both, sizes)]
