"""Classification and segmentation metrics, overall and per class, with bootstrap SEs over cases.

Example::

    report = classification_report(labels, logits, ["normal", "pneumonia"])
    report.per_class["pneumonia"]["sensitivity"]   # Estimate(value=0.93, se=0.012)
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from medexport.errors import DataError, InputError
from medexport.evaluation.bootstrap import bootstrap
from medexport.evaluation.report import Estimate, MetricReport

__all__ = ["Estimate", "MetricReport", "classification_report", "segmentation_report"]


def classification_report(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str], *,
                          n_boot: int = 1000, seed: int = 0) -> MetricReport:
    """Accuracy, macro-F1 and per-class sensitivity/specificity/F1/support of argmax predictions.

    ``scores`` is (N, K) logits or probabilities, or (N,) predicted class indices. A class with no
    cases has NaN sensitivity (guard rails skip it); macro-F1 averages the classes that occur in
    the labels or the predictions (as scikit-learn does). ``support`` is a count, so its SE is 0.
    """
    classes = _check_classes(classes, minimum=2)
    k = len(classes)
    labels = _as_int(labels, "labels", ndim=1)
    pred = _predicted_classes(np.asarray(scores), k, len(labels))
    _check_range(labels, k, "labels")
    y = np.eye(k)[labels]                      # (N, K) one-hot truth
    p = np.eye(k)[pred]                        # (N, K) one-hot prediction
    hit = y * p

    def stat(w: np.ndarray) -> np.ndarray:
        tp, support, predicted = w @ hit, w @ y, w @ p
        n = w.sum(axis=1, keepdims=True)
        f1 = 2 * tp / (support + predicted)    # 2TP / (2TP + FP + FN)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # no class defined -> NaN macro-F1
            macro_f1 = np.nanmean(f1, axis=1, keepdims=True)
        return np.concatenate([tp.sum(axis=1, keepdims=True) / n, macro_f1, tp / support,
                               (n - support - predicted + tp) / (n - support), f1], axis=1)

    value, se = bootstrap(stat, len(labels), n_boot=n_boot, seed=seed)
    est = [Estimate(float(v), float(s)) for v, s in zip(value, se)]
    support = y.sum(axis=0)
    per_class = {
        name: {"sensitivity": est[2 + c], "specificity": est[2 + k + c], "f1": est[2 + 2 * k + c],
               "support": Estimate(float(support[c]), 0.0)}
        for c, name in enumerate(classes)
    }
    return MetricReport(task="classification", overall_metric="accuracy", class_metric="sensitivity",
                        overall={"accuracy": est[0], "macro_f1": est[1]}, per_class=per_class,
                        n=len(labels))


def segmentation_report(labels: np.ndarray, pred: np.ndarray, classes: Sequence[str], *,
                        spacing: Sequence[float] | None = None, n_boot: int = 1000, seed: int = 0,
                        hd95: bool = True) -> MetricReport:
    """Per-class Dice (and HD95) of integer masks, averaged over images; bootstrap over images.

    ``classes[0]`` is background and is not scored. A class absent from both the label and the
    prediction of an image has no Dice for that image (skipped, not counted as 1); absent from the
    label but predicted scores 0. HD95 (MONAI, 95th percentile, in mm when ``spacing`` is given)
    is defined only where both masks hold the class, and is averaged over those images. The
    overall ``dice`` is the mean of the per-class Dice values (every class weighs the same).
    """
    classes = _check_classes(classes, minimum=2)
    k = len(classes)
    labels = _as_int(labels, "labels")
    pred = _as_int(pred, "pred")
    if labels.shape != pred.shape or labels.ndim < 2:
        raise InputError(f"segmentation labels and pred must both be (N, *spatial) masks, "
                         f"got {labels.shape} and {pred.shape}")
    _check_range(labels, k, "labels")
    _check_range(pred, k, "pred")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != labels.ndim - 1 or min(spacing) <= 0:
            raise InputError(f"spacing {spacing} must give one positive size per spatial axis "
                             f"({labels.ndim - 1} axes)")

    dice, dist = _per_image_scores(labels, pred, k, spacing, hd95)
    names = list(classes[1:])
    overall: dict[str, Estimate] = {}
    per_class: dict[str, dict[str, Estimate]] = {name: {} for name in names}
    for metric, scores in (("dice", dice), ("hd95", dist)):
        if scores is None:
            continue
        value, se = bootstrap(_classwise_mean(scores), len(labels), n_boot=n_boot, seed=seed)
        overall[metric] = Estimate(float(value[0]), float(se[0]))
        for c, name in enumerate(names):
            per_class[name][metric] = Estimate(float(value[1 + c]), float(se[1 + c]))
    return MetricReport(task="segmentation", overall_metric="dice", class_metric="dice",
                        overall=overall, per_class=per_class, n=len(labels), spacing=spacing)


def _per_image_scores(labels: np.ndarray, pred: np.ndarray, k: int, spacing: tuple[float, ...] | None,
                      hd95: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, K-1) Dice and HD95 per image and foreground class, NaN where undefined."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    n = len(labels)
    dice = np.empty((n, k - 1))
    dist = np.empty((n, k - 1)) if hd95 else None
    for i in range(n):   # one image at a time: one-hot 3D volumes of a whole set do not fit in memory
        y = one_hot(torch.from_numpy(labels[i][None, None]), k)
        p = one_hot(torch.from_numpy(pred[i][None, None]), k)
        in_y = y.flatten(2).any(-1)[0, 1:].numpy()
        in_p = p.flatten(2).any(-1)[0, 1:].numpy()
        # ignore_empty=False gives 1.0 for empty-in-both; we mark those NaN so they are skipped.
        d = compute_dice(p, y, include_background=False, ignore_empty=False)[0].numpy()
        dice[i] = np.where(in_y | in_p, d, np.nan)
        if dist is not None:
            both = in_y & in_p
            if both.any():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")   # MONAI warns on empty classes we discard below
                    h = compute_hausdorff_distance(p, y, include_background=False, percentile=95,
                                                   spacing=spacing)[0].numpy()
                dist[i] = np.where(both, h, np.nan)
            else:
                dist[i] = np.nan
    return dice, dist


def _classwise_mean(scores: np.ndarray):
    """Bootstrap statistic: [mean over classes, per-class means over images], skipping NaNs."""
    valid = (~np.isnan(scores)).astype(np.float64)
    filled = np.nan_to_num(scores, nan=0.0)

    def stat(w: np.ndarray) -> np.ndarray:
        per_class = (w @ filled) / (w @ valid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # every class undefined -> NaN
            overall = np.nanmean(per_class, axis=1, keepdims=True)
        return np.concatenate([overall, per_class], axis=1)

    return stat


def _check_classes(classes: Sequence[str], *, minimum: int) -> list[str]:
    names = [str(c) for c in classes]
    if len(names) < minimum or len(set(names)) != len(names):
        raise InputError(f"classes must be at least {minimum} distinct names, got {names}")
    return names


def _as_int(a: np.ndarray, what: str, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if ndim is not None and a.ndim != ndim:
        raise InputError(f"{what} must have {ndim} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise DataError(f"{what} is empty: nothing to evaluate")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.floating) or not np.all(a == np.round(a)):
            raise InputError(f"{what} must hold integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64)


def _check_range(a: np.ndarray, k: int, what: str) -> None:
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= k:
        raise DataError(f"{what} hold class indices {lo}..{hi}, outside 0..{k - 1} for {k} classes")


def _predicted_classes(scores: np.ndarray, k: int, n: int) -> np.ndarray:
    if scores.ndim == 2:
        if scores.shape != (n, k):
            raise InputError(f"scores must be (N, K) = ({n}, {k}), got {scores.shape}")
        if np.isnan(scores).any():
            raise DataError(f"scores hold {int(np.isnan(scores).sum())} NaN values")
        return scores.argmax(axis=1)
    pred = _as_int(scores, "predicted classes", ndim=1)
    if len(pred) != n:
        raise InputError(f"{len(pred)} predictions for {n} labels")
    _check_range(pred, k, "predicted classes")
    return pred
