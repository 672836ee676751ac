"""The schedule: one-shot uniform pruning, and the ``prune-l1``, ``prune-l2`` and ``prune-bn`` passes.

:func:`plan` analyses the graph, skips locked or excluded groups, and picks per group the
lowest-scored classes to drop; :class:`PrunePass` applies the plan to a copy through the mutation
table. Iterative and guard-railed schedules are loops over ``plan`` + apply with a smaller ratio and
a validation step between (a rolled-back group goes into ``exclude``). Example::

    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    small, record = get_pass("prune-l2").apply(model, (1, 1, 64, 64), PruneConfig(ratio=0.5))
    [(g.name, g.kept, g.removed) for g in record.layers]
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from medexport.compression._registry import register_pass
from medexport.compression.base import CompressionPass, model_macs
from medexport.compression.pruning import importance as scores
from medexport.compression.pruning.config import PruneConfig
from medexport.compression.pruning.dependency import DependencyGraph, analyze
from medexport.compression.pruning.mutate import prune_layer
from medexport.compression.record import PassRecord

if TYPE_CHECKING:
    from torch import nn

    from medexport.compression.pruning.importance import Importance


@dataclass
class GroupRecord:
    """One pruned group: its layers, channels kept/removed, and MACs of its layers before/after the pass."""

    name: str
    method: str
    members: tuple[str, ...]
    channels: int
    kept: int
    removed: int
    macs_before: int
    macs_after: int


@dataclass
class PrunePlan:
    """Which classes go, on which analysed graph; ``keep`` gives per layer and role the positions to keep."""

    graph: DependencyGraph
    removed: set[int]
    groups: list[GroupRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def keep(self) -> dict[str, dict[str, list[int]]]:
        """``{layer name: {role: kept positions}}`` for every layer that loses channels."""
        out: dict[str, dict[str, list[int]]] = {}
        for member in self.graph.members:
            kept = self.graph.keep_positions(member.labels, self.removed)
            if len(kept) < len(member.labels):
                out.setdefault(member.name, {})[member.role] = kept
        return out


def plan(model: "nn.Module", input_shape: tuple[int, ...], config: PruneConfig, importance: "Importance",
         method: str = "") -> PrunePlan:
    """Choose, without changing ``model``, the classes each prunable group drops under ``config``."""
    import torch

    from medexport.graph import capture

    graph = analyze(capture(model, tuple(input_shape)))
    result = PrunePlan(graph, set())
    for group in graph.groups:
        names = tuple(dict.fromkeys(m.name for m in group.members))
        reason = group.locked or next((f"excluded by name ({n})" for n in names
                                       if any(fnmatch.fnmatchcase(n, p) for p in config.exclude)), None)
        channels = group.channels
        n_keep = max(1, round(config.kept_channels(channels) * len(group.classes) / channels))
        if reason is None and n_keep >= len(group.classes):
            reason = "too few channels to prune at this ratio"
        if reason:
            result.skipped[group.name] = reason
            continue
        order = torch.argsort(importance(group, graph), stable=True)
        result.removed.update(group.classes[i] for i in order[:len(group.classes) - n_keep].tolist())
        kept = len(graph.keep_positions(next(m.labels for m in group.members if m.role == "out"), result.removed))
        result.groups.append(GroupRecord(group.name, method, names, channels, kept, channels - kept, 0, 0))
    return result


class PrunePass(CompressionPass):
    """Remove ``PruneConfig.ratio`` of every prunable group's channels, lowest ``importance`` first."""

    importance: "Importance" = staticmethod(scores.l2_norm)
    family = "pruning"
    config_type = PruneConfig

    def apply_impl(self, model: "nn.Module", input_shape: tuple[int, ...],
                   config: PruneConfig) -> tuple["nn.Module", PassRecord]:
        from medexport.graph import capture, profile

        macs_before = model_macs(model, input_shape)
        chosen = plan(model, input_shape, config, type(self).importance, self.name)
        layer_macs = {c.name: c.macs for c in profile(capture(model, tuple(input_shape))).layers}
        keep = chosen.keep()
        fraction = {name: _kept_fraction(roles, chosen.graph, name) for name, roles in keep.items()}
        for name, roles in keep.items():
            prune_layer(model.get_submodule(name), roles)
        for record in chosen.groups:
            layers = [n for n in record.members if layer_macs.get(n)]
            record.macs_before = sum(layer_macs[n] for n in layers)
            record.macs_after = sum(round(layer_macs[n] * fraction.get(n, 1.0)) for n in layers)
        return model, PassRecord(self.name, config.to_dict(), macs_before, model_macs(model, input_shape),
                                 chosen.groups, chosen.skipped)


def _kept_fraction(roles: dict[str, list[int]], graph: DependencyGraph, name: str) -> float:
    """Fraction of a conv/linear layer's MACs left: MACs scale with kept inputs times kept outputs."""
    fraction = 1.0
    for member in graph.members:
        if member.name == name and member.role in roles:
            fraction *= len(roles[member.role]) / len(member.labels)
    return fraction


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
