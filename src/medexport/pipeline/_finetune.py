"""Recovery fine-tuning in the chain: distillation from the original, or training on the user's labelled images,
after compression or inside a stepwise pass.

With a stepwise pass (pruning, merging; alone or in a chain) the --finetune steps are spread over its
--iterative steps: each step is fine-tuned before it is judged by the guard rails and before the next step
scores channels (the classic prune / fine-tune loop). Otherwise the model is fine-tuned once, after the
lossy passes. Without --finetune-data the teacher is the original model and the images are the calibration
images (the user's --calib, else the reference model's training-side images); with it, the model trains on
those labelled images, early-stopped on a part of them held aside, and each round checkpoints into
``<out>/finetune-checkpoints/round-<k>.pt`` for --resume. Never on the images the guard rails judge.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medexport.pipeline._outdir import CHECKPOINTS
from medexport.pipeline.context import RunContext

if TYPE_CHECKING:
    from torch import nn

    from medexport.finetune import DistillConfig


class Recovery:
    """Fine-tunes a compressed model for ``steps`` steps each time it is called (a stepwise pass's ``recover``
    hook, or once after compression); every round is recorded. A run that does not resume drops the checkpoints
    an earlier one left."""

    def __init__(self, ctx: RunContext, steps: int) -> None:
        self.ctx, self.steps = ctx, steps
        self.rounds: list = []
        self.labelled = ctx.config.data.finetune_data is not None
        self.folder = Path(ctx.config.out_dir) / CHECKPOINTS
        self.memory: dict | None = None
        if self.labelled and not ctx.config.resume:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __call__(self, model: "nn.Module") -> "nn.Module":
        # another seed each round, so the rounds do not replay the same batches
        if self.labelled:
            from medexport.finetune import LabelledConfig, finetune_on_labels

            compression = self.ctx.config.compression
            config = LabelledConfig(steps=self.steps, val_fraction=compression.finetune_val,
                                    patience=compression.patience, seed=len(self.rounds))
            model, record = finetune_on_labels(model, self.ctx.original, self.ctx.finetune_labelled(), config,
                                               self.ctx.rails, checkpoint=self.folder / f"round-{len(self.rounds)}.pt",
                                               resume=self.ctx.config.resume, progress=True)
        else:
            from medexport.finetune import distill

            model, record = distill(model, self.ctx.original, self.ctx.calibration(), self._recipe(model),
                                    progress=True)
        self.rounds.append(record)
        return model

    def _recipe(self, model: "nn.Module") -> "DistillConfig":
        """This round's distillation recipe, with activation-map compression and the patch that fits --max-memory."""
        from medexport.finetune import DistillConfig

        config = self.ctx.config.compression
        recipe = DistillConfig(steps=self.steps, seed=len(self.rounds), act_compress=config.act_compress)
        if config.act_compress is not None or config.max_memory is not None:
            self.memory = self.memory or activation_budget(model, self.ctx.calibration(), recipe, config.max_memory)
            recipe = dataclasses.replace(recipe, patch=self.memory.get("patch"))
        return recipe

    def summary(self) -> dict | None:
        """The recipe and outcome: the one round's record, or totals with ``rounds`` (None if it never ran). With
        rollback, a step that still breaks the rails is retried group by group, each try recovered: ``rounds`` and
        the totals count every round run, kept or rolled back, and ``loss_last`` is the last round's."""
        if not self.rounds:
            return None
        first, last = self.rounds[0].to_dict(), self.rounds[-1].to_dict()
        if self.labelled:
            labelled = self.ctx.finetune_labelled()
            source = {"count": int(len(labelled.images)), "source": labelled.description}
        else:
            source = self.ctx.calibration_source()
        result = {**first, "data": source}
        if len(self.rounds) > 1:
            result.update(steps=sum(r.steps for r in self.rounds), seconds=round(sum(r.seconds for r in self.rounds), 2),
                          loss_last=last["loss_last"], schedule=f"{self.steps} steps after each pruning step tried",
                          rounds=[r.to_dict() for r in self.rounds])
        if self.memory is not None:
            result["memory"] = self.memory
        calib, data = self.ctx.config.data.calib, self.ctx.config.data.data
        if (not self.labelled and calib is not None and data is not None
                and Path(calib).resolve() == Path(data).resolve()):
            result["note"] = ("fine-tuned on the same images the guard rails validate on (--calib = --data): the "
                              "validation is not independent")
        return result


def activation_budget(model: "nn.Module", images: np.ndarray, recipe: "DistillConfig", cap: int | None) -> dict:
    """Activation memory of one fine-tuning batch, compressed and not, and with a cap (--max-memory) the largest
    patch (multiples of 16 per axis, up to the images' size) whose compressed activations fit it."""
    import torch

    from medexport.errors import InputError
    from medexport.finetune.actcompress import activation_memory, eta, fit_patch

    batch, channels, spatial = recipe.batch_for(images), images.shape[1], images.shape[2:]
    spec = recipe.act_compress
    patch = tuple(spatial)
    result: dict = {"batch": batch}
    if cap is not None:
        candidates = {tuple(spatial)} | {tuple(min(s, max(16, (s // 16 - j) * 16)) for s in spatial)
                                         for j in range(max(spatial) // 16)}
        fit = fit_patch(model, channels, batch, list(candidates), cap, spec)
        if fit.patch is None:
            raise InputError(f"--max-memory {cap / 2 ** 20:.0f} MiB: even a {'x'.join(map(str, fit.tried[-1][0]))} "
                             f"patch needs {fit.tried[-1][1] / 2 ** 20:.1f} MiB of activations per batch of {batch}; "
                             "raise it, or compress more (--act-ratio, --act-layers)")
        patch = fit.patch
        result.update(cap=cap, tried={"x".join(map(str, p)): b for p, b in fit.tried})
    x = torch.zeros((batch, channels, *patch))
    base = activation_memory(model, x).saved
    used = activation_memory(model, x, spec).saved if spec is not None else base
    result.update(patch=patch if cap is not None else None, activation_bytes=used, uncompressed_bytes=base,
                  eta=round(eta(used, base), 1))
    if cap is not None:
        result["uncompressed_fits"] = base <= cap
    return result


def stepwise_steps(ctx: RunContext) -> int | None:
    """Fine-tuning steps after each step of the chain's stepwise pass (None: no stepwise pass, or no --finetune)."""
    from medexport.compression import get_pass

    steps = ctx.config.compression.finetune_steps
    stepwise = [config for method, config in ctx.config.passes if get_pass(method).stepwise]
    if not steps or not stepwise:
        return None
    return max(1, steps // getattr(stepwise[0], "steps", 1))


def finetune_label(steps: int, labelled: bool = False) -> str:
    if labelled:
        return f"fine-tune ({steps} steps on your labelled images, early-stopped on a part held aside)"
    return f"fine-tune ({steps} steps of distillation from the original)"
