"""One structural step (``plan`` + ``apply_plan``) and the ``prune-l1/l2/bn/act`` passes.

:func:`plan` analyses the graph, skips locked or excluded groups, and picks per group the classes to
drop so that the group keeps its target channel count (from :func:`schedule.allocate` unless given);
:func:`apply_plan` narrows the layers through the mutation table. :class:`PrunePass` runs the schedule
(one-shot or iterative, guard-railed when held-out data is given) over these two. Example::

    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    small, record = get_pass("prune-l2").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5))
    [(g.name, g.kept, g.removed) for g in record.layers]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from medexport.compression._registry import register_pass
from medexport.compression.base import CompressionPass
from medexport.compression.pruning import importance as scores
from medexport.compression.pruning import options as prune_options
from medexport.compression.pruning.config import PruneConfig
from medexport.compression.pruning.dependency import DependencyGraph, Group, analyze
from medexport.compression.pruning.mutate import prune_layer
from medexport.compression.pruning.schedule import allocate, run_schedule
from medexport.compression.record import GroupRecord
from medexport.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from medexport.compression.pruning.importance import Importance
    from medexport.compression.record import PassRecord


@dataclass
class PrunePlan:
    """Which classes go, on which analysed graph; ``keep`` gives per layer and role the positions to keep.

    ``merges`` maps a kept class to the classes merged into it (filter merging only).
    """

    graph: DependencyGraph
    removed: set[int]
    groups: list[GroupRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    merges: dict[int, list[int]] = field(default_factory=dict)

    def keep(self) -> dict[str, dict[str, list[int]]]:
        """``{layer name: {role: kept positions}}`` for every layer that loses channels."""
        out: dict[str, dict[str, list[int]]] = {}
        for member in self.graph.members:
            kept = self.graph.keep_positions(member.labels, self.removed)
            if len(kept) < len(member.labels):
                out.setdefault(member.name, {})[member.role] = kept
        return out


def lowest(group: Group, graph: DependencyGraph, n_keep: int, importance: "Importance",
           chosen: PrunePlan) -> list[int]:
    """The classes of ``group`` to remove: all but the ``n_keep`` highest-scored."""
    import torch

    order = torch.argsort(importance(group, graph), stable=True)
    return [group.classes[i] for i in order[:len(group.classes) - n_keep].tolist()]


def plan(model: "nn.Module", input_shape: tuple[int, ...], config: PruneConfig, importance: "Importance",
         method: str = "", targets: dict[str, int] | None = None, choose=lowest) -> PrunePlan:
    """Choose, without changing ``model``, the classes each group drops to keep ``targets[name]`` channels.

    ``targets`` default to :func:`schedule.allocate` under ``config``; ``choose(group, graph, n_keep,
    importance, plan)`` picks the classes (lowest scores by default; filter merging clusters instead).
    """
    from medexport.graph import capture

    graph = analyze(capture(model, tuple(input_shape)), model)
    result = PrunePlan(graph, set())
    if targets is None:
        targets, result.skipped = allocate(graph, config, importance)
    for group in graph.groups:
        if group.name not in targets:
            continue
        channels = group.channels
        n_keep = max(1, round(targets[group.name] * len(group.classes) / channels))
        if n_keep >= len(group.classes):
            continue
        result.removed.update(choose(group, graph, n_keep, importance, result))
        kept = len(graph.keep_positions(next(m.labels for m in group.members if m.role == "out"), result.removed))
        names = tuple(dict.fromkeys(m.name for m in group.members))
        result.groups.append(GroupRecord(group.name, method, names, channels, kept, channels - kept, 0, 0))
    return result


def apply_plan(model: "nn.Module", chosen: PrunePlan) -> "nn.Module":
    """Narrow every layer of ``model`` that ``chosen`` touches, in place."""
    for name, roles in chosen.keep().items():
        prune_layer(model.get_submodule(name), roles)
    return model


class PrunePass(CompressionPass):
    """Remove ``PruneConfig.ratio`` of the prunable channels, lowest ``importance`` first, on a schedule.

    Subclasses change the score (``importance_for``), how classes are picked (``choose``) and what is
    done to the weights before slicing (``before_slicing``, used by filter merging).
    """

    importance: "Importance" = staticmethod(scores.l2_norm)
    family = "pruning"
    config_type = PruneConfig
    options = prune_options.OPTIONS
    stepwise = True

    def configure(self, given: dict, *, backend: str) -> PruneConfig:
        return prune_options.configure(self.config_type, given)

    def bind(self, config: PruneConfig, data) -> PruneConfig:
        return prune_options.bind(config, data, self.needs_calibration)

    def describe(self, config: PruneConfig) -> str:
        return prune_options.describe(self.name, config)

    def importance_for(self, config: PruneConfig) -> "Importance":
        return type(self).importance

    def choose(self, group, graph, n_keep, importance, chosen: PrunePlan) -> list[int]:
        return lowest(group, graph, n_keep, importance, chosen)

    def before_slicing(self, model: "nn.Module", chosen: PrunePlan, config: PruneConfig) -> None:
        """Hook for weight surgery that needs the full-width layers (nothing for plain pruning)."""

    def step(self, model: "nn.Module", input_shape: tuple[int, ...], config: PruneConfig,
             targets: dict[str, int] | None = None) -> PrunePlan:
        """One structural step on ``model`` in place: plan, weight surgery, slicing."""
        chosen = plan(model, input_shape, config, self.importance_for(config), self.name, targets,
                      self.choose)
        self.before_slicing(model, chosen, config)
        apply_plan(model, chosen)
        return chosen

    def apply_impl(self, model: "nn.Module", input_shape: tuple[int, ...],
                   config: PruneConfig) -> tuple["nn.Module", "PassRecord"]:
        if self.needs_calibration and config.calibration is None:
            raise InputError(f"the {self.name} pass needs calibration images (PruneConfig.calibration)")
        return run_schedule(self, model, tuple(input_shape), config)


@register_pass("prune-l1")
class PruneL1Pass(PrunePass):
    """Structured channel pruning, filters ranked by L1 norm."""

    importance = staticmethod(scores.l1_norm)


@register_pass("prune-l2")
class PruneL2Pass(PrunePass):
    """Structured channel pruning, filters ranked by L2 norm."""

    importance = staticmethod(scores.l2_norm)


@register_pass("prune-bn")
class PruneBNPass(PrunePass):
    """Structured channel pruning, channels ranked by their norm's |gamma| (network slimming)."""

    importance = staticmethod(scores.bn_scale)


@register_pass("prune-act")
class PruneActivationPass(PrunePass):
    """Structured channel pruning, channels ranked by their activations on calibration images."""

    needs_calibration = True

    def importance_for(self, config: PruneConfig) -> "Importance":
        return scores.activation(config.calibration)
