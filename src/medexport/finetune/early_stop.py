"""Early stopping on the guard-rail metric, judged on a split of the fine-tuning images the guard rails never see.

The score of a model is its headroom under the guard rails on that split: the smallest margin, in points, by
which any watched metric (the overall one and each class's, as :class:`~medexport.evaluation.GuardRails`
checks them) stays above its limit relative to the original. Fine-tuning keeps the weights of the best score
and stops after ``patience`` checks without a better one. Example::

    stop = EarlyStopping(GuardRailScore(original, val_images, val_labels, task, classes, rails), patience=5)
    if stop.check(student, step):   # True: patience used up
        ...
    stop.restore(student)           # the best weights seen (the starting ones if nothing beat them)
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from medexport.evaluation import GuardRails


class GuardRailScore:
    """Headroom under the guard rails on a held-aside split: min over the rails' rows of (Δ + limit), in points."""

    def __init__(self, original: "nn.Module", images: np.ndarray, labels: np.ndarray, task: str,
                 classes: Sequence[str], rails: "GuardRails", roi_size: Sequence[int] | None = None) -> None:
        self.images, self.labels, self.rails = images, labels, rails
        self.common = {"task": task, "classes": list(classes), "roi_size": roi_size, "hd95": False, "n_boot": 0}
        self.reference = self._report(original)
        self.metric = f"{self.reference.class_metric} headroom under the guard rails"

    def __call__(self, model: "nn.Module") -> float:
        result = self.rails.check(self.reference, self._report(model), artifact="fine-tuning")
        return float(min(row["delta_points"] + row["limit_points"] for row in result.rows))

    def _report(self, model: "nn.Module"):
        import torch

        from medexport.evaluation import evaluate

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                report, _ = evaluate(lambda x: model(torch.from_numpy(x)).numpy(), self.images, self.labels,
                                     **self.common)
        finally:
            model.train(was_training)
        return report


class EarlyStopping:
    """Keeps the best-scoring weights; ``check`` says when ``patience`` checks in a row brought nothing better."""

    def __init__(self, score: GuardRailScore, patience: int) -> None:
        self.score, self.patience = score, patience
        self.best, self.best_step, self.bad, self.best_state = -float("inf"), -1, 0, None
        self.history: list[tuple[int, float]] = []

    def check(self, model: "nn.Module", step: int) -> bool:
        value = self.score(model)
        self.history.append((step, round(value, 4)))
        if value > self.best + 1e-9:
            self.best, self.best_step, self.bad = value, step, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad += 1
        return self.bad >= self.patience

    def restore(self, model: "nn.Module") -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad, "best_state": self.best_state,
                "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.bad = float(state["best"]), int(state["best_step"]), int(state["bad"])
        self.best_state = state["best_state"]
        self.history = [(int(s), float(v)) for s, v in state["history"]]
