"""Recovery fine-tuning in the chain: distillation from the original, after compression or inside a pruning schedule.

With a pruning pass (alone or in a chain) the --finetune steps are spread over its --iterative steps: each
pruning step is fine-tuned before it is judged by the guard rails and before the next step scores channels
(the classic prune / fine-tune loop; one step: prune, fine-tune, judge). After a low-rank pass alone, the
model is fine-tuned once, after compression. Either way the teacher is the original model and the images are
the calibration images (the user's --calib, else the reference model's training-side images), never the
held-out images the guard rails judge on.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medexport.loading import LoadedModel
from medexport.pipeline.config import BuildConfig

if TYPE_CHECKING:
    from torch import nn


class Recovery:
    """Distils a compressed model from ``original`` for ``steps`` steps each time it is called (a
    ``PruneConfig.recover`` hook, or once after compression); every round is recorded."""

    def __init__(self, loaded: LoadedModel, original: "nn.Module", config: BuildConfig, steps: int) -> None:
        from medexport.pipeline._stages import calibration_images

        self.original, self.steps, self.config = original, steps, config
        self.images, self.source = calibration_images(loaded, config.calib, config.calib_samples)
        self.rounds: list = []

    def __call__(self, model: "nn.Module") -> "nn.Module":
        from medexport.finetune import DistillConfig, distill

        # another seed each round, so the rounds do not replay the same batches
        model, record = distill(model, self.original, self.images, DistillConfig(steps=self.steps,
                                                                               seed=len(self.rounds)), progress=True)
        self.rounds.append(record)
        return model

    def summary(self) -> dict | None:
        """The recipe and outcome: the one round's record, or totals with ``rounds`` (None if it never ran). With
        rollback, a step that still breaks the rails is retried group by group, each try recovered: ``rounds`` and
        the totals count every round run, kept or rolled back, and ``loss_last`` is the last round's."""
        if not self.rounds:
            return None
        first, last = self.rounds[0].to_dict(), self.rounds[-1].to_dict()
        result = {**first, "data": self.source}
        if len(self.rounds) > 1:
            result.update(steps=sum(r.steps for r in self.rounds), seconds=round(sum(r.seconds for r in self.rounds), 2),
                          loss_last=last["loss_last"], schedule=f"{self.steps} steps after each pruning step tried",
                          rounds=[r.to_dict() for r in self.rounds])
        calib, data = self.config.calib, self.config.data
        if calib is not None and data is not None and Path(calib).resolve() == Path(data).resolve():
            result["note"] = ("fine-tuned on the same images the guard rails validate on (--calib = --data): the "
                              "validation is not independent")
        return result


def interleaved(config: BuildConfig) -> bool:
    """Whether --finetune runs inside the pruning schedule (a pruning pass is asked for) rather than after it."""
    from medexport.pipeline._compress import families

    return bool(config.finetune_steps) and "pruning" in families(config)


def recovery_for_pruning(loaded: LoadedModel, original: "nn.Module", config: BuildConfig) -> Recovery | None:
    """The recover hook of the pruning pass: --finetune spread over its --iterative steps (None without --finetune)."""
    if not interleaved(config):
        return None
    return Recovery(loaded, original, config, max(1, config.finetune_steps // config.prune_steps))


def finetune_label(config: BuildConfig) -> str:
    return f"fine-tune ({config.finetune_steps} steps of distillation from the original)"


def finetune(loaded: LoadedModel, original: "nn.Module", config: BuildConfig) -> dict:
    """Distil the compressed ``loaded.module`` from ``original`` once, after compression."""
    recovery = Recovery(loaded, original, config, config.finetune_steps)
    loaded.module = recovery(loaded.module)
    return recovery.summary()
