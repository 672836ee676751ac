"""The compress stage: the chain's passes, configured from their options and bound to the run's data, then run.

In order, each under its own stage: the lossy passes (a stepwise one fine-tuned step by step), the
fine-tuning after them when no stepwise pass took it, then the exact rewrites, which must see the final
weights (fine-tuned after it, a rewrite's zero taps would not stay zero). A pass with rollback judges its
steps against the model it receives; the build's final validation is always against the original.
"""
from __future__ import annotations

from medexport.errors import InputError
from medexport.pipeline._finetune import Recovery, finetune_label, stepwise_steps
from medexport.pipeline.context import RunContext


def compress(ctx: RunContext) -> tuple[dict, dict | None]:
    """Replace ``ctx.loaded.module`` by its compressed copy; return the chain's record and the fine-tuning's (None
    without --finetune)."""
    from medexport.compression import chain, get_pass
    from medexport.compression.record import chain_summary

    loaded = ctx.loaded
    if loaded.module is None:
        raise InputError("compression rewrites torch layers; give a torch model, not an ONNX file")
    shape = (1, *loaded.input_shape[1:])
    lossy = [(m, c) for m, c in ctx.config.passes if not get_pass(m).exact]
    exact = [(m, c) for m, c in ctx.config.passes if get_pass(m).exact]
    per_step = stepwise_steps(ctx)
    recovery = Recovery(ctx, per_step) if per_step else None
    records, tuned = [], None
    if lossy:
        ctx.recover = recovery
        try:
            with ctx.stage(_label(lossy, per_step)):
                loaded.module, done = chain(loaded.module, shape, [(m, get_pass(m).bind(c, ctx)) for m, c in lossy])
        finally:
            ctx.recover = None
        records += done
        tuned = recovery.summary() if recovery is not None else None
        steps = ctx.config.compression.finetune_steps
        if steps and tuned is None:   # no stepwise pass, or one that found nothing to do
            with ctx.stage(finetune_label(steps, ctx.config.data.finetune_data is not None)):
                once = Recovery(ctx, steps)
                loaded.module = once(loaded.module)
                tuned = once.summary()
    if exact:
        with ctx.stage(_label(exact, None)):
            loaded.module, done = chain(loaded.module, shape, [(m, get_pass(m).bind(c, ctx)) for m, c in exact])
        records += done
    return chain_summary(records), tuned


def _label(passes: list, per_step: int | None) -> str:
    """A compress stage's progress label: each pass and what it is asked to do."""
    from medexport.compression import get_pass

    labels = []
    for method, config in passes:
        label = get_pass(method).describe(config)
        if per_step and get_pass(method).stepwise:
            label += f", fine-tuned {per_step} steps after each step tried"
        labels.append(label)
    return f"compress ({', then '.join(labels)})"
