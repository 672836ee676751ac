"""Recovery fine-tuning in the chain: distillation from the original, after compression or inside a stepwise pass.

With a stepwise pass (pruning, merging; alone or in a chain) the --finetune steps are spread over its
--iterative steps: each step is fine-tuned before it is judged by the guard rails and before the next step
scores channels (the classic prune / fine-tune loop). Otherwise the model is fine-tuned once, after the
lossy passes. Either way the teacher is the original model and the images are the calibration images (the
user's --calib, else the reference model's training-side images), never the held-out images the guard rails
judge on.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medexport.pipeline.context import RunContext

if TYPE_CHECKING:
    from torch import nn


class Recovery:
    """Distils a compressed model from the original for ``steps`` steps each time it is called (a stepwise pass's
    ``recover`` hook, or once after compression); every round is recorded."""

    def __init__(self, ctx: RunContext, steps: int) -> None:
        self.ctx, self.steps = ctx, steps
        self.rounds: list = []

    def __call__(self, model: "nn.Module") -> "nn.Module":
        from medexport.finetune import DistillConfig, distill

        # another seed each round, so the rounds do not replay the same batches
        model, record = distill(model, self.ctx.original, self.ctx.calibration(),
                                DistillConfig(steps=self.steps, seed=len(self.rounds)), progress=True)
        self.rounds.append(record)
        return model

    def summary(self) -> dict | None:
        """The recipe and outcome: the one round's record, or totals with ``rounds`` (None if it never ran). With
        rollback, a step that still breaks the rails is retried group by group, each try recovered: ``rounds`` and
        the totals count every round run, kept or rolled back, and ``loss_last`` is the last round's."""
        if not self.rounds:
            return None
        first, last = self.rounds[0].to_dict(), self.rounds[-1].to_dict()
        result = {**first, "data": self.ctx.calibration_source()}
        if len(self.rounds) > 1:
            result.update(steps=sum(r.steps for r in self.rounds), seconds=round(sum(r.seconds for r in self.rounds), 2),
                          loss_last=last["loss_last"], schedule=f"{self.steps} steps after each pruning step tried",
                          rounds=[r.to_dict() for r in self.rounds])
        calib, data = self.ctx.config.data.calib, self.ctx.config.data.data
        if calib is not None and data is not None and Path(calib).resolve() == Path(data).resolve():
            result["note"] = ("fine-tuned on the same images the guard rails validate on (--calib = --data): the "
                              "validation is not independent")
        return result


def stepwise_steps(ctx: RunContext) -> int | None:
    """Fine-tuning steps after each step of the chain's stepwise pass (None: no stepwise pass, or no --finetune)."""
    from medexport.compression import get_pass

    steps = ctx.config.compression.finetune_steps
    stepwise = [config for method, config in ctx.config.passes if get_pass(method).stepwise]
    if not steps or not stepwise:
        return None
    return max(1, steps // getattr(stepwise[0], "steps", 1))


def finetune_label(steps: int) -> str:
    return f"fine-tune ({steps} steps of distillation from the original)"
