"""Schedules: how many channels each group keeps, in how many steps, and rollback on guard rails.

* :func:`allocate` turns a config into per-group channel targets: ``scope="layer"`` gives every
  prunable group the same ratio; ``scope="global"`` ranks all prunable classes on one list (scores
  normalised by their group's mean) and removes the lowest until ``ratio`` of all prunable channels is
  gone, no group losing more than ``max_ratio`` (the capped non-uniform sparsity of the pathology
  paper). Targets are rounded to multiples of ``round_to``.
* :func:`run_schedule` reaches those targets in ``steps`` equal steps, re-analysing and re-scoring the
  smaller model before each (iterative pruning), each step optionally recovered (``config.recover``, e.g.
  fine-tuned) before it is judged. With held-out data, each step is validated against the
  ORIGINAL model; a step that breaks a guard rail is undone and retried group by group, and a group
  whose own step breaks it is rolled back and locked while the search goes on elsewhere (the
  filter-merging paper's scheme). Example::

    small, record = run_schedule(get_pass("prune-l2"), model, (1, 1, 128, 128),
                                 PruneConfig(ratio=0.5, steps=4, heldout=data, rails=GuardRails(1, 3)))
    record.skipped   # {"model.0.residual": "locked by guard rails at step 1/4: ..."}: locked before losing a channel
    record.layers[0].note  # "1 step(s); locked by guard rails at step 2/4: class 'grey_matter' dice ...": locked
                           # after a successful step, so it is a pruned group and its lock is in its note
"""
from __future__ import annotations

import collections
import copy
import fnmatch
import math
from typing import TYPE_CHECKING, Any

from medexport.compression.pruning import importance as scores
from medexport.compression.pruning.config import PruneConfig
from medexport.compression.pruning.dependency import DependencyGraph, Group, analyze
from medexport.compression.record import GroupRecord, PassRecord
from medexport.errors import InputError

CORRECTIONS = 2  # latency mode: extra steps when the measured result misses the target by more than the tolerance

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from medexport.compression.pruning.importance import Importance
    from medexport.compression.pruning.prune import PrunePass


def allocate(graph: DependencyGraph, config: PruneConfig, importance: "Importance",
             layer_macs: dict[str, int] | None = None) -> tuple[dict[str, int], dict[str, str]]:
    """``({group name: channels to keep}, {group name: why it is not pruned})`` under ``config``.

    ``layer_macs`` (``{layer name: MACs}``) makes the global ranking cost-aware.
    """
    skipped, prunable = {}, []
    for group in graph.groups:
        reason = skip_reason(group, config)
        if reason is None and config.kept_channels(group.channels) >= group.channels and config.scope == "layer":
            reason = "too few channels to prune at this ratio"
        if reason:
            skipped[group.name] = reason
        else:
            prunable.append(group)
    if config.scope == "layer":
        return {g.name: config.kept_channels(g.channels) for g in prunable}, skipped
    ratios = _global_ratios(graph, prunable, config, importance, layer_macs or {})
    targets = {}
    for group in prunable:
        kept = config.kept_channels(group.channels, ratios[group.name])
        if kept < group.channels:
            targets[group.name] = kept
        else:
            skipped[group.name] = "kept whole by the global ranking"
    return targets, skipped


def _global_ratios(graph: DependencyGraph, groups: list, config: PruneConfig, importance: "Importance",
                   layer_macs: dict[str, int]) -> dict[str, float]:
    """Per-group removal ratios from one ranking of every prunable class, capped at ``max_ratio``."""
    cost = [sum(layer_macs.get(n, 0) for n in dict.fromkeys(m.name for m in g.members)) / g.channels
            for g in groups]
    mean_cost = sum(cost) / len(cost) if cost else 0.0
    ranked = []
    for index, group in enumerate(groups):
        width = group.channels / len(group.classes)  # channels per class (a GroupNorm class spans several)
        relative = cost[index] / mean_cost if mean_cost > 0 and cost[index] > 0 else 1.0
        ranked += [(float(s) / relative, index, width) for s in scores.normalised(importance(group, graph))]
    ranked.sort()
    total = sum(g.channels for g in groups)
    removed = [0.0] * len(groups)
    budget = config.ratio * total
    for _, index, width in ranked:
        if budget <= 0:
            break
        if removed[index] + width <= config.max_ratio * groups[index].channels:
            removed[index] += width
            budget -= width
    return {g.name: removed[i] / g.channels for i, g in enumerate(groups)}


def refuse_if_nothing_prunable(method: str, graph: DependencyGraph) -> None:
    """One-line InputError when the analysis locks every group of ``graph``, naming why: a network built of
    layers it does not follow (a ViT's attention and flattening) is refused instead of being "compressed" 1.00x.
    Groups the user excluded by name are a choice, not a refusal (``--exclude-layer '*'`` runs and prunes nothing)."""
    reasons = [g.locked for g in graph.groups]
    if graph.groups and all(reasons):
        common = collections.Counter(reasons).most_common(3)
        raise InputError(f"{method} cannot prune this model: none of its {len(reasons)} channel groups may lose "
                         f"channels ({'; '.join(f'{n}x {r}' for r, n in common)})")
    if not graph.groups:
        raise InputError(f"{method} cannot prune this model: it has no convolution or Linear layer the analysis "
                         "can follow")


def skip_reason(group: Group, config: PruneConfig) -> str | None:
    """Why ``group`` may not be pruned at all (locked by the analysis or excluded by name), or None."""
    names = dict.fromkeys(m.name for m in group.members)
    return group.locked or next((f"excluded by name ({n})" for n in names
                                 if any(fnmatch.fnmatchcase(n, p) for p in config.exclude)), None)


def step_target(channels: int, final: int, step: int, steps: int, round_to: int) -> int:
    """Channels a group of ``channels`` (originally) keeps after ``step`` of ``steps`` toward ``final``."""
    if step >= steps:
        return final
    target = channels - (channels - final) * step / steps
    if round_to > 1 and final % round_to == 0:
        target = math.ceil(target / round_to) * round_to
    return max(final, min(channels, int(math.ceil(target))))


class _Guard:
    """Validates a candidate against the original model's metrics on held-out images.

    Not ``validate_against``: the original is scored once, not on every step, and a step's check skips
    HD95 (never guarded) and takes 100 bootstrap resamples, in-process in torch, to keep steps fast."""

    def __init__(self, original: "nn.Module", config: PruneConfig) -> None:
        self.data, self.rails = config.heldout, config.rails
        self.reference = self._report(original)
        self.checks = 0

    def _report(self, model: "nn.Module"):
        import torch

        from medexport._outputs import prediction
        from medexport.evaluation import evaluate

        def predict(x):
            with torch.no_grad():
                return prediction(model(torch.from_numpy(x))).numpy()

        data = self.data
        return evaluate(predict, data.images, data.labels, task=data.task, classes=data.classes,
                        roi_size=data.roi_size, spacing=data.spacing, hd95=False, n_boot=100)[0]

    def check(self, model: "nn.Module", artifact: str):
        self.checks += 1
        return self.rails.check(self.reference, self._report(model), artifact=artifact)


def run_schedule(prune: "PrunePass", model: "nn.Module", input_shape: tuple[int, ...],
                 config: PruneConfig) -> tuple["nn.Module", "PassRecord"]:
    """Prune ``model`` (a private copy) toward the allocated targets (or, in latency mode, toward the latency
    budget of each step, widths chosen by :class:`~.latency_mode.LatencyPlanner`), step by step, with rollback."""
    from medexport.graph import capture, profile

    captured = capture(model, input_shape)   # one trace serves the cost profile and the dependency analysis
    before = profile(captured)
    graph = analyze(captured, model, config.group_norm)
    refuse_if_nothing_prunable(prune.name, graph)
    start = model
    planner = None
    if config.latency is None:
        final, skipped = allocate(graph, config, prune.importance_for(config), layer_macs(before))
    else:
        from medexport.compression.pruning.latency_mode import LatencyPlanner

        skipped = {g.name: r for g in graph.groups if (r := skip_reason(g, config))}
        def narrow(base: "nn.Module", targets: dict[str, int], graph: DependencyGraph | None = None) -> "nn.Module":
            small, analysed = copy.deepcopy((base, graph))  # copied together: the graph's layers are the copy's
            prune.step(small, input_shape, config, targets, analysed)
            return small

        planner = LatencyPlanner(model, input_shape, config, graph, [g.name for g in graph.groups
                                                                     if g.name not in skipped], narrow)
    original = {g.name: g.channels for g in graph.groups}
    members = {g.name: tuple(dict.fromkeys(m.name for m in g.members)) for g in graph.groups}
    guard = _Guard(model, config) if config.heldout is not None else None
    settle = planner.settle if planner is not None else None
    locked: dict[str, str] = {}
    done_steps: dict[str, int] = {}
    log: list[dict[str, Any]] = []

    def step_once(step: int, targets: dict[str, int], label: str) -> None:
        nonlocal model
        model, passed = _try(prune, model, input_shape, config, targets, guard, label, log, settle)
        if not passed:  # find the groups that break the rails; the others go ahead
            for name, target in targets.items():
                model, ok = _try(prune, model, input_shape, config, {name: target}, guard, f"{label} {name}",
                                 log, settle)
                if ok:
                    done_steps[name] = step
                else:
                    locked[name] = f"locked by guard rails at {label}/{config.steps}: {log[-1]['message']}"
        else:
            done_steps.update(dict.fromkeys(targets, step))

    for step in range(1, config.steps + 1):
        if planner is None:
            targets = {n: step_target(original[n], k, step, config.steps, config.round_to)
                       for n, k in final.items() if n not in locked}
        else:
            before_last = model
            targets = planner.targets(model, planner.budget(step), locked)
        step_once(step, targets, f"step {step}")
        if planner is not None and step < config.steps and targets:
            planner.observe(start, model)
    latency = {}
    if planner is not None:
        tried = [(planner.measure(start, model), model)]
        for extra in range(1, CORRECTIONS + 1):
            measured = tried[-1][0]
            if abs(measured / config.latency - 1) <= config.tolerance:
                break
            aim = planner.predict(model) * config.latency / measured  # the table's ratio that measures at target
            if measured < config.latency:  # faster than asked: redo the last step from before it, less deep
                model = before_last
            targets = planner.targets(model, aim, locked)
            if not targets:
                break
            step_once(config.steps + extra, targets, f"correction {extra}")
            tried.append((planner.measure(start, model), model))
        measured, model = _closest(tried, config.latency * (1 + config.tolerance))
        latency = planner.record(planner.predict(model), measured)
    captured = capture(model, input_shape)
    after = profile(captured)
    now = {g.name: g.channels for g in analyze(captured, model, config.group_norm).groups}
    records = _group_records(prune.name, now, original, members, before, after, done_steps, locked)
    skipped.update({n: r for n, r in locked.items() if not any(g.name == n for g in records)})
    record = PassRecord(prune.name, config.to_dict(), before.macs, after.macs, records, skipped)
    record.log = log
    record.latency = latency
    if guard is not None:
        record.log.append({"step": "validations", "count": guard.checks})
    return model, record


def _closest(tried: list[tuple[float, "nn.Module"]], limit: float) -> tuple[float, "nn.Module"]:
    """The slowest measured result within ``limit`` (it keeps the most), else the fastest of them."""
    within = [t for t in tried if t[0] <= limit]
    return max(within, key=lambda t: t[0]) if within else min(tried, key=lambda t: t[0])


def _try(prune: "PrunePass", model: "nn.Module", input_shape, config: PruneConfig, targets: dict[str, int],
         guard: _Guard | None, label: str, log: list,
         settle: "Callable[[nn.Module], nn.Module] | None" = None) -> tuple["nn.Module", bool]:
    """Apply one step to a copy (its BatchNorm statistics settled by ``settle`` in latency mode, then recovered by
    ``config.recover`` if given); keep it if the guard rails hold (or there are none), else keep ``model``."""
    if not targets:
        return model, True
    candidate = copy.deepcopy(model)
    prune.step(candidate, input_shape, config, targets)
    if settle is not None:
        candidate = settle(candidate)
    if config.recover is not None:
        candidate = config.recover(candidate)
    if guard is None:
        return candidate, True
    result = guard.check(candidate, label)
    log.append({"step": label, "passed": result.passed, "message": result.message()})
    return (candidate, True) if result.passed else (model, False)


def layer_macs(cost) -> dict[str, int]:
    """``{layer name: MACs}`` of a profile; a torch.export capture names its nodes ``layer:op``, summed per layer."""
    out: dict[str, int] = {}
    for c in cost.layers:
        name = c.name.partition(":")[0]
        out[name] = out.get(name, 0) + c.macs
    return out


def _group_records(method: str, now: dict[str, int], original: dict[str, int],
                   members: dict[str, tuple[str, ...]], before, after, done_steps: dict[str, int],
                   locked: dict[str, str]) -> list[GroupRecord]:
    """One GroupRecord per group that lost channels: original vs final width (``now``) and its layers' MACs."""
    macs_before, macs_after = layer_macs(before), layer_macs(after)
    records = []
    for name, channels in original.items():
        kept = now.get(name, channels)
        if kept >= channels:
            continue
        layers = members[name]
        note = f"{done_steps.get(name, 0)} step(s)" + (f"; {locked[name]}" if name in locked else "")
        records.append(GroupRecord(name, method, layers, channels, kept, channels - kept,
                                   sum(macs_before.get(n, 0) for n in layers),
                                   sum(macs_after.get(n, 0) for n in layers), note))
    return records
