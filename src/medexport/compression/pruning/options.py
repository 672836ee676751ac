"""The pruning/merging family's options (``--ratio`` or ``--latency``, ``--min-channels``, ``--iterative``,
``--scope``, ``--max-ratio``, ``--group-norm``, ``--rollback``) and the data a pruning pass reads at run time
(calibration images, labelled images for rollback, a fine-tuning hook).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from medexport.compression.options import EXCLUDE_LAYER, LATENCY, LATENCY_BACKEND, PassOption
from medexport.compression.pruning.config import GROUP_NORM
from medexport.errors import InputError

OPTIONS = (
    PassOption("--ratio", "ratio", "Pruning passes: share of channels removed from every prunable group.",
               type=float, default=0.5),
    PassOption("--min-channels", "min_channels", "Pruning/merging: no pruned layer keeps fewer output channels than "
               "this (a narrower layer is left as it is).", type=int, default=4),
    PassOption("--iterative", "steps", "Pruning/merging: reach --ratio in this many steps, re-scoring after each "
               "(--iterative alone: 4 steps).", type=int, default=1, flag_value=4),
    PassOption("--scope", "scope", "Pruning/merging: same ratio in every group, or per-group ratios from one global "
               "ranking capped by --max-ratio.", default="layer", choices=("layer", "global")),
    PassOption("--max-ratio", "max_ratio", "Pruning/merging with --scope global: most a single group may lose.",
               type=float, default=0.75),
    PassOption("--group-norm", "group_norm", "Pruning/merging: a GroupNorm loses single channels and keeps its number "
               "of groups (each group's statistics change), or whole norm groups (the others compute as before).",
               default="channels", choices=GROUP_NORM),
    PassOption("--rollback", "rollback", "Pruning/merging: validate every step on the labelled images; a step that "
               "breaks the guard rails is undone and its group locked.", is_flag=True, default=False),
    LATENCY,
    LATENCY_BACKEND,
    EXCLUDE_LAYER,
)


def configure(config_type: type, given: dict[str, Any], backend: str) -> Any:
    """The PruneConfig from the options given; --max-ratio without --scope global is refused, not ignored, and so
    are --ratio and --scope with --latency (the latency table chooses every group's width); --latency-backend
    without it is refused by the chain as an option nothing reads (:meth:`PrunePass.reads`). With --latency, --max-ratio caps each group (default 0.75) and ``backend`` is where it measures."""
    if given.get("latency") is not None:
        clash = [flag for flag, name in (("--ratio", "ratio"), ("--scope", "scope")) if name in given]
        if clash:
            raise InputError(f"{' and '.join(clash)} and --latency are competing rules; with --latency the latency "
                             "table chooses every group's width (cap it with --max-ratio)")
        return config_type(**{"backend": backend, **given})
    if "max_ratio" in given and given.get("scope", "layer") != "global":
        raise InputError("--max-ratio caps groups in the global ranking; add --scope global "
                         "(--scope layer removes --ratio from every group)")
    return config_type(**given)


def bind(config: Any, data: Any, needs_calibration: bool) -> Any:
    """Calibration images when scored or merged on activations, labelled images and rails with --rollback, and the
    run's fine-tuning hook (followed after each step)."""
    extra: dict[str, Any] = {"recover": data.recover}
    if needs_calibration or config.latency is not None:  # a latency's widths are judged on calibration images
        extra["calibration"] = data.calibration()
    if config.rollback:
        extra["heldout"] = data.labelled()
        if extra["heldout"] is None:
            raise InputError("--rollback validates every step on labelled images: pass --data (and --labels), "
                             "or use a reference model")
        extra["rails"] = data.rails
    return dataclasses.replace(config, **extra)


def describe(name: str, config: Any) -> str:
    if config.latency is not None:
        return f"{name} latency {config.latency} on {config.backend}" + (
            f" in {config.steps} steps" if config.steps > 1 else "")
    return f"{name} ratio {config.ratio}" + (f" in {config.steps} steps" if config.steps > 1 else "")
