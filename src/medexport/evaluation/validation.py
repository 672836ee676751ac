"""Validate a deployed artifact against the original model on labelled real images, with guard rails."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medexport.evaluation.evaluate import Predictor, evaluate
from medexport.evaluation.fidelity import fidelity
from medexport.evaluation.guardrails import GuardRails


@dataclass
class LabelledData:
    """Images ready for the model, their labels, and what the metrics need to know about them."""

    images: np.ndarray
    labels: np.ndarray
    task: str
    classes: Sequence[str]
    description: str
    roi_size: Sequence[int] | None = None
    spacing: Sequence[float] | None = None


def validate_against(reference: Predictor, candidate: Predictor, data: LabelledData, rails: GuardRails, *,
                     artifact: str, progress: bool = False) -> dict[str, Any]:
    """Metrics of both models, their fidelity, and the guard-rail verdict, as one JSON-able dict."""
    fixed = [getattr(p, "input_shape", [None])[0] for p in (reference, candidate)]
    batch = min([b for b in fixed if b] or [8])  # a static-batch artifact takes its own batch size only
    common = {"task": data.task, "classes": list(data.classes), "roi_size": data.roi_size, "spacing": data.spacing,
              "progress": progress, "batch_size": batch}
    ref_report, ref_logits = evaluate(reference, data.images, data.labels, **common)
    art_report, art_logits = evaluate(candidate, data.images, data.labels, **common)
    result = rails.check(ref_report, art_report, artifact=artifact)
    return {
        "data": data.description,
        "reference": ref_report.to_dict(),
        "artifact": art_report.to_dict(),
        "reference_table": ref_report.table(),
        "artifact_table": art_report.table(),
        "fidelity": fidelity(ref_logits, art_logits, task=data.task, classes=list(data.classes)),
        "guard_rails": {**result.to_dict(), "limits": rails.to_dict(),
                        "message": "" if result.passed else result.message()},
        "table": result.table(),
    }


def reference_data(reference_model) -> LabelledData:
    """The held-out real images bundled with a zoo reference model."""
    images, labels = reference_model.heldout()
    return LabelledData(images, labels, reference_model.task, reference_model.classes,
                        f"held-out images of {reference_model.name} ({len(images)})",
                        roi_size=reference_model.roi_size, spacing=reference_model.spacing)


def user_data(data_path: str | Path, labels_path: str | Path | None, input_shape: Sequence[int], *, task: str | None,
              classes: Sequence[str] | None, reference_model=None) -> LabelledData:
    """The user's labelled images: an .npz with ``images``/``labels``, or image files plus mask files.

    Task and class names come from the reference model when there is one. The description names a count
    and a content hash, never the folder (folder names can carry patient identifiers).
    """
    from medexport.errors import DataError, InputError

    ref = reference_model
    task = task or (ref.task if ref else None)
    names = list(classes) if classes else (list(ref.classes) if ref else None)
    if task is None or not names:
        raise InputError("--task and --classes are required with --data for a model that is not a reference model")
    path = Path(data_path)
    if path.suffix == ".npz":
        images, labels = _read_npz(path, input_shape)
    else:
        if labels_path is None:
            raise DataError("--labels is required with an image folder (masks paired with the images)")
        from medexport.imaging import PreprocessSpec, load_labeled

        spec = PreprocessSpec(spatial_size=tuple(input_shape[2:]), channels=int(input_shape[1]))
        dataset = load_labeled(path, labels_path, spec)
        images, labels = dataset.images, dataset.labels
    if labels.min() < 0 or labels.max() >= len(names):
        raise DataError(f"labels run from {labels.min()} to {labels.max()}, but there are {len(names)} classes")
    digest = hashlib.sha256(images.tobytes())
    digest.update(labels.tobytes())
    return LabelledData(images, labels, task, names, f"{len(images)} user images (sha256 {digest.hexdigest()[:16]})",
                        roi_size=ref.roi_size if ref else None, spacing=ref.spacing if ref else None)


def _read_npz(path: Path, input_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    import zipfile

    from medexport.errors import DataError

    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz or "labels" not in npz:
                raise DataError(f"{path.name} must hold 'images' and 'labels' arrays")
            images, labels = npz["images"], npz["labels"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:   # truncated or random bytes
        raise DataError(f"{path.name} is not a readable .npz file: {(str(exc).splitlines() or [''])[0][:150]}") from exc
    if len(images) == 0 or len(images) != len(labels):
        raise DataError(f"{path.name} holds {len(images)} images and {len(labels)} labels")
    if tuple(images.shape[1:]) != tuple(input_shape[1:]):
        raise DataError(f"images in {path.name} are {images.shape[1:]}, the model expects {tuple(input_shape[1:])}")
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
        raise DataError(f"{path.name} contains NaN or Inf images")
    if not np.array_equal(labels, np.round(labels)):
        raise DataError(f"labels in {path.name} must be whole class numbers")
    return images, labels.astype(np.int64)
