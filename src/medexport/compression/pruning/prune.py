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

import collections
import math
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

    ``merges`` maps a kept class to the classes merged into it (filter merging only); ``min_channels`` is the
    config's floor on every producer's width (see :func:`producer_floors`).
    """

    graph: DependencyGraph
    removed: set[int]
    min_channels: int = 1
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


def producer_floors(group: Group, graph: DependencyGraph, n_keep: int, floor: int) -> list[tuple[dict, int]]:
    """Per producer of ``group``: ``({class: its output positions}, outputs it must keep)``.

    A group can join producers that own different classes: in VNet's up-transition a transposed conv is
    concatenated with the skip and the block's output is added back onto both, so the transposed conv owns half
    the group. Scores summed over producers favour the classes more producers write, and ranked on the whole
    group such a producer could lose every filter. So each keeps at least the group's kept share of its outputs,
    and at least ``floor`` (or all it has, when it has fewer)."""
    out = []
    for member in group.members:
        if member.role == "out":
            width = len(member.labels)
            owned = collections.Counter(graph.find(label) for label in member.labels)
            out.append((owned, min(width, max(floor, math.ceil(width * n_keep / len(group.classes))))))
    return out


def lowest(group: Group, graph: DependencyGraph, n_keep: int, importance: "Importance",
           chosen: PrunePlan) -> list[int]:
    """The classes of ``group`` to remove: all but the ``n_keep`` highest-scored, lowest first, skipping a class
    whose removal would leave one of the group's producers under its floor (:func:`producer_floors`)."""
    import torch

    floors = producer_floors(group, graph, n_keep, chosen.min_channels)
    kept = [sum(owned.values()) for owned, _ in floors]
    removed: list[int] = []
    for i in torch.argsort(importance(group, graph), stable=True).tolist():
        if len(removed) == len(group.classes) - n_keep:
            break
        c = group.classes[i]
        if all(kept[p] - owned.get(c, 0) >= need for p, (owned, need) in enumerate(floors)):
            removed.append(c)
            kept = [kept[p] - owned.get(c, 0) for p, (owned, _) in enumerate(floors)]
    return removed


def plan(model: "nn.Module", input_shape: tuple[int, ...], config: PruneConfig, importance: "Importance",
         method: str = "", targets: dict[str, int] | None = None, choose=lowest,
         graph: DependencyGraph | None = None) -> PrunePlan:
    """Choose, without changing ``model``, the classes each group drops to keep ``targets[name]`` channels.

    ``targets`` default to :func:`schedule.allocate` under ``config``; ``choose(group, graph, n_keep,
    importance, plan)`` picks the classes (lowest scores by default; filter merging clusters instead).
    ``graph`` is ``model``'s analysis when the caller has it (it is captured and analysed otherwise).
    """
    from medexport.graph import capture

    graph = graph or analyze(capture(model, tuple(input_shape)), model, config.group_norm)
    result = PrunePlan(graph, set(), min_channels=config.min_channels)
    if targets is None:
        targets, result.skipped = allocate(graph, config, importance)
    for group in graph.groups:
        if group.name not in targets:
            continue
        channels = group.channels
        n_keep = max(1, round(config.snap_to_norms(group, targets[group.name]) * len(group.classes) / channels))
        if n_keep >= len(group.classes):
            continue
        dropped = choose(group, graph, n_keep, importance, result)
        result.removed.update(dropped)
        _keep_floors(group, graph, dropped, n_keep, result)
        kept = len(graph.keep_positions(next(m.labels for m in group.members if m.role == "out"), result.removed))
        names = tuple(dict.fromkeys(m.name for m in group.members))
        result.groups.append(GroupRecord(group.name, method, names, channels, kept, channels - kept, 0, 0))
    return result


def _keep_floors(group: Group, graph: DependencyGraph, dropped: list[int], n_keep: int, chosen: PrunePlan) -> None:
    """Give back dropped classes (last chosen first) until every producer of ``group`` keeps its floor
    (:func:`producer_floors`), whatever ``choose`` picked (filter merging clusters without floors)."""
    for owned, need in producer_floors(group, graph, n_keep, chosen.min_channels):
        for c in reversed(dropped):
            if sum(n for k, n in owned.items() if k not in chosen.removed) >= need:
                break
            if c in owned and c in chosen.removed:
                chosen.removed.discard(c)
                for survivor, parents in list(chosen.merges.items()):
                    if c in parents:
                        parents.remove(c)
                    if not parents:
                        del chosen.merges[survivor]


def apply_plan(model: "nn.Module", chosen: PrunePlan) -> "nn.Module":
    """Narrow every layer of ``model`` that ``chosen`` touches, in place."""
    for name, roles in chosen.keep().items():
        prune_layer(model.get_submodule(name), roles)
    return model


def check_runs(model: "nn.Module", input_shape: tuple[int, ...], method: str) -> None:
    """Raise InputError naming the layer a narrowed ``model`` fails in, so the message blames the pruning
    and says how to avoid it, not the input shape (which ran before pruning)."""
    import torch

    names = {id(m): n for n, m in model.named_modules()}
    running: list = []

    def enter(module, args) -> None:
        running.append(module)

    def leave(module, args, output) -> None:
        running.pop()

    hooks = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    except Exception as exc:  # noqa: BLE001 - any failure of the narrowed model is this pass's to explain
        layer = names.get(id(running[-1]), "") if running else ""
        where = f"layer {layer} ({type(running[-1]).__name__})" if layer else "the model"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{method} left {where} unable to run: {reason}; keep its channels with "
                         f"--exclude-layer '{layer or '*'}' or prune less (--ratio, --min-channels)") from exc
    finally:
        for hook in hooks:
            hook.remove()


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
        return prune_options.configure(self.config_type, given, backend)

    def reads(self, field: str, config: PruneConfig) -> bool:
        """The latency rule's backend means nothing to a ratio."""
        return config.latency is not None or field != "backend"

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
             targets: dict[str, int] | None = None, graph: DependencyGraph | None = None) -> PrunePlan:
        """One structural step on ``model`` in place: plan, weight surgery, slicing (``graph``: ``model``'s
        analysis, when the caller has it)."""
        chosen = plan(model, input_shape, config, self.importance_for(config), self.name, targets,
                      self.choose, graph)
        self.before_slicing(model, chosen, config)
        apply_plan(model, chosen)
        check_runs(model, input_shape, self.name)
        return chosen

    def apply_impl(self, model: "nn.Module", input_shape: tuple[int, ...],
                   config: PruneConfig) -> tuple["nn.Module", "PassRecord"]:
        if self.needs_calibration and config.calibration is None:
            raise InputError(f"the {self.name} pass needs calibration images (PruneConfig.calibration)")
        if config.latency is not None and config.calibration is None:
            raise InputError("pruning to a latency judges each group's widths by what they change in the output on "
                             "calibration images: pass --calib (PruneConfig.calibration)")
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
