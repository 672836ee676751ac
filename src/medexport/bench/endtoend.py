"""End-to-end latency: read an image file, preprocess, infer (sliding window for volumes), postprocess.

What a hospital sees per study differs from the compute-only latency of one batch: reading a DICOM series or
a NIfTI volume and resampling it can cost more than the network. Each stage is timed apart, over ``repeats``
runs after one untimed run (the file cache and the runtime warm), and reported beside the compute latency.

Example::

    spec = PreprocessSpec(spatial_size=(96, 96, 96))
    result = end_to_end(runner, Path("brain.nii.gz"), spec, roi_size=(32, 32, 32), task="segmentation")
    result["total"]["median_ms"], result["stages"]["infer"]["median_ms"]
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from medexport.bench.latency import latency_stats
from medexport.errors import DataWarning, InputError
from medexport.imaging.spec import PreprocessSpec

STAGES = ("read_preprocess", "infer", "postprocess")


def end_to_end(predict: Callable[[np.ndarray], np.ndarray], source: Path, spec: PreprocessSpec, *,
               task: str = "segmentation", roi_size: Sequence[int] | None = None, overlap: float = 0.25,
               batch_size: int = 1, repeats: int = 5) -> dict:
    """Time every stage of a study through ``predict`` ``repeats`` times; per-stage and total statistics (ms).

    ``roi_size``: the model's input patch, when ``spec.spatial_size`` is larger (MONAI sliding window).
    ``task``: "segmentation" (argmax label map) or "classification" (softmax probabilities) post-processing.
    """
    from medexport.evaluation.evaluate import predict_all
    from medexport.imaging import load_images

    if repeats < 1:
        raise InputError(f"end-to-end repeats must be at least 1, got {repeats}")
    if task not in ("segmentation", "classification"):
        raise InputError(f"end-to-end task must be segmentation or classification, got '{task}'")
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for run in range(repeats + 1):   # run 0 warms the file cache and the runtime, untimed
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            images = load_images(source, spec).images
        t1 = time.perf_counter()
        logits = predict_all(predict, images, batch_size=batch_size, roi_size=roi_size, overlap=overlap)
        t2 = time.perf_counter()
        _postprocess(logits, task)
        t3 = time.perf_counter()
        if run:
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2)):
                times[stage].append(seconds * 1e3)
    total = np.sum([times[s] for s in STAGES], axis=0)
    return {"source": Path(source).name, "images": int(images.shape[0]), "input_shape": list(images.shape[1:]),
            "sliding_window_roi": list(roi_size) if roi_size else None, "repeats": repeats,
            "stages": {s: _rounded(latency_stats(np.asarray(v))) for s, v in times.items()},
            "total": _rounded(latency_stats(total))}


def _postprocess(logits: np.ndarray, task: str) -> np.ndarray:
    """What a viewer receives: a label map (segmentation) or class probabilities (classification)."""
    if task == "segmentation":
        return logits.argmax(axis=1).astype(np.uint8)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _rounded(stats: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in stats.items()}
