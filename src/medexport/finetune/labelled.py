"""Recovery fine-tuning on the user's own labelled images, for when labels beat the original as a teacher.

Distillation (:mod:`medexport.finetune.distill`) can at best give back the original's answers; where the user
has labelled images (above all from their own scanners, which the original may never have seen), training on
the labels can do better. Loss per task: Dice + cross-entropy for segmentation (MONAI's ``DiceCELoss``: Dice
keeps small classes from drowning in background, cross-entropy keeps the gradients well-behaved early),
cross-entropy for classification. A fraction of the images (``val_fraction``) is held aside: the guard-rail
metric on it, relative to the original, picks the weights kept and stops the run early
(:mod:`~medexport.finetune.early_stop`); the guard rails themselves judge other images. With ``checkpoint``
the run saves its whole state every ``eval_every`` steps and ``resume`` continues from it
(:mod:`~medexport.finetune.checkpoint`). Example::

    data = user_data("labelled.npz", None, (1, 1, 128, 128), task=None, classes=None, reference_model=ref)
    student, record = finetune_on_labels(student, original, data, LabelledConfig(steps=300), GuardRails())
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from medexport.errors import DataError, InputError
from medexport.finetune.augment import random_labelled_view
from medexport.finetune.checkpoint import (fingerprint, load_checkpoint, rng_state, save_checkpoint,
                                           set_rng_state)
from medexport.finetune.distill import _progress, descend
from medexport.finetune.early_stop import EarlyStopping, GuardRailScore

if TYPE_CHECKING:
    import torch
    from torch import nn

    from medexport.evaluation import GuardRails
    from medexport.evaluation.validation import LabelledData

LOSSES = {"segmentation": "Dice + cross-entropy (MONAI DiceCELoss)", "classification": "cross-entropy"}


@dataclass(frozen=True)
class LabelledConfig:
    """Steps of Adam (cosine-decayed from ``lr``) on random batches of augmented labelled images.

    ``batch`` None: 8 images for 2D inputs, 2 volumes for 3D. ``val_fraction`` of the images is held aside for
    early stopping (0: none, every image trains and the last weights are kept); the guard-rail headroom on it is
    checked every ``eval_every`` steps (None: a tenth of the steps), and ``patience`` checks in a row without a
    better one stop the run. ``seed`` draws the batches; the held-aside images are the same for every seed."""

    steps: int = 300
    lr: float = 1e-3
    batch: int | None = None
    val_fraction: float = 0.2
    patience: int = 5
    eval_every: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError(f"fine-tuning needs at least 1 step, got {self.steps}")
        if not self.lr > 0:
            raise InputError("the fine-tuning lr must be positive")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"--finetune-val is the fraction of the labelled images held aside, in [0, 1), got "
                             f"{self.val_fraction}")
        if self.patience < 1:
            raise InputError(f"--patience must be at least 1 check, got {self.patience}")
        for name in ("batch", "eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"fine-tuning {name} must be at least 1, got {getattr(self, name)}")

    def every(self) -> int:
        return self.eval_every or max(1, self.steps // 10)


@dataclass
class LabelledRecord:
    """What the fine-tuning did: its recipe, the images it trained and stopped on, time, loss, early stopping."""

    method: str
    steps: int   # steps run, in every session of a resumed run
    steps_asked: int
    batch: int
    lr: float
    loss: str
    images: int   # images trained on
    val_images: int   # images held aside for early stopping
    early_stopping: dict[str, Any] | None
    resumed_from: int | None   # the step a resumed run continued from
    seconds: float   # this session's
    loss_first: float  # mean over the first 10% of steps
    loss_last: float  # mean over the last 10% of steps

    def to_dict(self) -> dict:
        return asdict(self)


def split_indices(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and the held-aside images: a seeded random ``fraction`` (at least one image when
    ``fraction`` > 0) held aside, at least one image left to train on. The seed is not the run's, so every round
    of a stepwise pass holds the same images aside."""
    if fraction == 0:
        return np.arange(n), np.arange(0)
    if n < 2:
        raise DataError(f"{n} labelled image{'s' * (n != 1)}: holding some aside for early stopping needs at least "
                        "2 (--finetune-val 0 trains on all and keeps the last weights)")
    order = np.random.default_rng(seed).permutation(n)
    held = min(n - 1, max(1, round(n * fraction)))
    return np.sort(order[held:]), np.sort(order[:held])


def finetune_on_labels(student: "nn.Module", original: "nn.Module", data: "LabelledData", config: LabelledConfig,
                       rails: "GuardRails", *, checkpoint: Path | None = None, resume: bool = False,
                       progress: bool = False) -> tuple["nn.Module", LabelledRecord]:
    """Train ``student`` in place on ``data`` (images (N, C, *spatial) and labels); returns it in eval mode with
    the record. ``original`` only scores the held-aside images (the reference the guard-rail headroom is
    measured from) and is never changed. ``data.roi_size``: images of another size train on random patches of
    it (padded where an image is smaller)."""
    import torch

    images, labels = _checked(data)
    train, val = split_indices(len(images), config.val_fraction)
    batch = config.batch or (8 if images.ndim == 4 else 2)
    every = config.every()
    loss_fn = labelled_loss(data.task)
    recipe = {**dataclasses.asdict(config), "task": data.task, "classes": list(data.classes),
              "rails": rails.to_dict(), "roi_size": data.roi_size}
    stamp = fingerprint(recipe, student, images, labels)
    pool_x = torch.from_numpy(np.ascontiguousarray(images[train], dtype=np.float32))
    pool_y = torch.from_numpy(labels[train])
    patch = _patch_size(data.roi_size, images.shape[2:])
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    stop = None
    if len(val):
        stop = EarlyStopping(GuardRailScore(original, images[val], labels[val], data.task, data.classes, rails,
                                            roi_size=data.roi_size), config.patience)
    step, losses, done, resumed = 0, [], False, None
    state = load_checkpoint(checkpoint, stamp) if checkpoint is not None and resume else None
    if state is not None:
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        set_rng_state(rng, state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if stop is not None:
            stop.load_state_dict(state["early_stopping"])
        step, losses, done, resumed = int(state["step"]), list(state["losses"]), bool(state["done"]), int(state["step"])
    elif stop is not None:
        stop.check(student, 0)   # the starting weights: fine-tuning never keeps worse ones

    def save(finished: bool) -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "fingerprint": stamp, "step": step, "done": finished, "model": student.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": rng_state(rng),
                "torch_rng": torch.get_rng_state(), "losses": losses,
                "early_stopping": stop.state_dict() if stop is not None else None})

    start = time.perf_counter()
    student.train()
    try:
        with _progress(progress and not done, config.steps - step) as advance:
            while not done and step < config.steps:
                pick = rng.integers(0, len(pool_x), batch)
                x, y = _patches(pool_x[pick], pool_y[pick], patch, rng)
                x, y = random_labelled_view(x, y, rng)
                losses.append(descend(loss_fn(student(x), y), optimizer, schedule, step))
                step += 1
                advance(losses[-1])
                if step % every == 0 or step == config.steps:
                    done = (stop is not None and stop.check(student, step)) or step == config.steps
                    if done and stop is not None:
                        stop.restore(student)
                    save(done)
    finally:
        student.eval()
    tenth = max(1, len(losses) // 10)
    early = None
    if stop is not None:
        early = {"metric": stop.score.metric, "patience": config.patience, "every": every, "best_step": stop.best_step,
                 "best_points": round(stop.best, 3), "stopped_at": step, "history": stop.history}
    return student, LabelledRecord("labels", step, config.steps, batch, config.lr, LOSSES[data.task], len(train),
                                   len(val), early, resumed, round(time.perf_counter() - start, 2),
                                   float(np.mean(losses[:tenth])) if losses else float("nan"),
                                   float(np.mean(losses[-tenth:])) if losses else float("nan"))


def labelled_loss(task: str) -> Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]:
    """The loss of (logits, labels) for ``task``: DiceCELoss on masks (softmax over the classes; a sigmoid for a
    single output channel), cross-entropy on class numbers."""
    import torch.nn.functional as F

    if task == "classification":
        return lambda out, y: F.cross_entropy(out, y)
    from monai.losses import DiceCELoss

    softmax, sigmoid = DiceCELoss(to_onehot_y=True, softmax=True), DiceCELoss(sigmoid=True)

    def loss(out, y):
        if out.shape[2:] != y.shape[1:]:
            raise InputError(f"the model's output {tuple(out.shape)} does not match the masks {tuple(y.shape)}")
        return sigmoid(out, y[:, None].float()) if out.shape[1] == 1 else softmax(out, y[:, None])

    return loss


def _checked(data: "LabelledData") -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(data.images), np.asarray(data.labels)
    if images.ndim not in (4, 5) or not len(images) or len(images) != len(labels):
        raise DataError(f"labelled fine-tuning needs images (N, C, *spatial) with one label each, got "
                        f"{images.shape} and {labels.shape}")
    if not np.isfinite(images).all():
        raise DataError("fine-tuning images contain NaN or infinite values")
    if data.task == "segmentation":
        if labels.ndim == images.ndim:   # (N, 1, *spatial) masks
            labels = labels[:, 0]
        if labels.shape[1:] != images.shape[2:]:
            raise DataError(f"masks {labels.shape[1:]} do not match the images {images.shape[2:]}")
    elif labels.ndim != 1:
        raise DataError(f"classification needs one class number per image, got labels {labels.shape}")
    return images, labels.astype(np.int64)


def _patch_size(roi_size: Sequence[int] | None, spatial: Sequence[int]) -> tuple[int, ...] | None:
    """The training patch: ``roi_size`` when the images have another size (they are tiled at inference)."""
    if roi_size is None or tuple(roi_size) == tuple(spatial):
        return None
    return tuple(int(r) for r in roi_size)


def _patches(x: "torch.Tensor", y: "torch.Tensor", patch: tuple[int, ...] | None,
             rng: np.random.Generator) -> tuple["torch.Tensor", "torch.Tensor"]:
    """One random ``patch`` of the batch (the same place in every image), padded with the batch's lowest
    intensity (and background) where an image is smaller."""
    if patch is None:
        return x, y
    import torch.nn.functional as F

    spatial = x.shape[2:]
    pad = [max(0, p - s) for p, s in zip(patch, spatial)]
    widths = [w for total in reversed(pad) for w in (total // 2, total - total // 2)]
    if any(pad):
        x = F.pad(x, widths, value=float(x.min()))
        y = F.pad(y, widths, value=0) if y.ndim == x.ndim - 1 else y
    starts = [int(rng.integers(0, s - p + 1)) for s, p in zip(x.shape[2:], patch)]
    box = tuple(slice(s, s + p) for s, p in zip(starts, patch))
    return x[(slice(None), slice(None), *box)], (y[(slice(None), *box)] if y.ndim == x.ndim - 1 else y)
