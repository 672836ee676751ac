"""Run any predictor (torch, ONNX Runtime, OpenVINO, TensorRT) over a set of images and score it.

A predictor is a plain numpy function, so every backend's runner plugs in the same way::

    report, logits = evaluate(runner.infer, images, labels, task="segmentation",
                              classes=["background", "liver"], roi_size=(96, 96, 96))
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from medexport.errors import DataError, InputError
from medexport.evaluation.metrics import MetricReport, classification_report, segmentation_report

Predictor = Callable[[np.ndarray], np.ndarray]   # (B, C, *spatial) float32 -> (B, K, ...) logits

TASKS = ("classification", "segmentation")


def predict_all(predict: Predictor, images: np.ndarray, *, batch_size: int = 8,
                roi_size: Sequence[int] | None = None, overlap: float = 0.25,
                progress: bool = False) -> np.ndarray:
    """Logits for all ``images`` (N, C, *spatial), in batches of ``batch_size``.

    With ``roi_size``, images larger than it on any spatial axis are tiled by MONAI's
    ``sliding_window_inference`` (windows of ``roi_size`` batched ``batch_size`` at a time).
    Non-finite outputs (NaN or inf) raise DataError: a deployed model must never emit them quietly.
    """
    images = np.asarray(images)
    if images.ndim < 3 or len(images) == 0:
        raise InputError(f"images must be a non-empty (N, C, *spatial) array, got shape {images.shape}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    spatial = images.shape[2:]
    tiled = False
    if roi_size is not None:
        roi_size = tuple(int(r) for r in roi_size)
        if len(roi_size) != len(spatial) or min(roi_size) < 1:
            raise InputError(f"roi_size {roi_size} must give one positive size per spatial axis of {spatial}")
        if not 0.0 <= overlap < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {overlap}")
        tiled = any(s > r for s, r in zip(spatial, roi_size))

    starts = range(0, len(images), batch_size)
    if progress:
        from rich.progress import track
        starts = track(starts, description="predicting", total=len(starts))
    outputs = []
    for start in starts:
        batch = np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32)
        out = (_sliding_window(predict, batch, roi_size, overlap, batch_size) if tiled
               else np.asarray(predict(batch)))
        _check_output(out, batch, start, outputs[0].shape[1:] if outputs else None)
        outputs.append(out)
    return np.concatenate(outputs, axis=0)


def evaluate(predict: Predictor, images: np.ndarray, labels: np.ndarray, *, task: str,
             classes: Sequence[str], roi_size: Sequence[int] | None = None, batch_size: int = 8,
             spacing: Sequence[float] | None = None, progress: bool = False, hd95: bool = True,
             n_boot: int = 1000) -> tuple[MetricReport, np.ndarray]:
    """Predict all images and score them against ``labels``; returns (report, logits).

    Classification labels are (N,) ints; segmentation labels are (N, *spatial) or (N, 1, *spatial)
    masks, scored against the argmax of the logits (``classes[0]`` is background). ``hd95=False`` and
    a smaller ``n_boot`` make repeated checks cheaper (HD95 is reported, never guarded).
    """
    if task not in TASKS:
        raise InputError(f"task must be one of {TASKS}, got {task!r}")
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise InputError(f"{len(labels)} labels for {len(images)} images")
    logits = predict_all(predict, images, batch_size=batch_size, roi_size=roi_size, progress=progress)
    if task == "classification":
        return classification_report(labels, logits, classes, n_boot=n_boot), logits
    if logits.ndim < 3 or logits.shape[1] != len(classes):
        raise InputError(f"segmentation logits must be (N, K={len(classes)}, *spatial), got {logits.shape}")
    if labels.ndim == logits.ndim and labels.shape[1] == 1:
        labels = labels[:, 0]
    return segmentation_report(labels, logits.argmax(axis=1), classes, spacing=spacing, hd95=hd95,
                               n_boot=n_boot), logits


def _sliding_window(predict: Predictor, batch: np.ndarray, roi_size: tuple[int, ...], overlap: float,
                    sw_batch_size: int) -> np.ndarray:
    import torch
    from monai.inferers import sliding_window_inference

    def torch_predictor(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(predict(x.numpy()), dtype=np.float32))

    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(batch), roi_size, sw_batch_size,
                                       torch_predictor, overlap=overlap)
    return out.numpy()


def _check_output(out: np.ndarray, batch: np.ndarray, start: int, expected: tuple[int, ...] | None) -> None:
    if out.ndim < 2 or out.shape[0] != batch.shape[0]:
        raise DataError(f"predictor returned shape {out.shape} for a batch of shape {batch.shape}")
    if expected is not None and out.shape[1:] != expected:
        raise DataError(f"predictor output shape changed from {expected} to {out.shape[1:]} at image {start}")
    bad = ~np.isfinite(out)
    if bad.any():
        images = sorted({start + int(i) for i in np.nonzero(bad)[0]})
        raise DataError(f"predictor returned {int(bad.sum())} non-finite values (NaN/inf) "
                        f"for images {images[:5]}{'...' if len(images) > 5 else ''}")
