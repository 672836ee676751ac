"""Validate a deployed artifact against the original model on labelled real images, with guard rails."""
from __future__ import annotations

from dataclasses import dataclass
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
    common = {"task": data.task, "classes": list(data.classes), "roi_size": data.roi_size, "spacing": data.spacing,
              "progress": progress}
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
