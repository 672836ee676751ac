"""Importance: one score per class of a group, higher means keep; the lowest-scored classes are removed.

Scores sum over the group's members, so a residual stream is judged by all the convs writing into
it, and a GroupNorm class by all of its channels. Example::

    scores = l2_norm(group, graph)   # tensor of len(group.classes)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

    from medexport.compression.pruning.dependency import DependencyGraph, Group, Member

Importance = Callable[["Group", "DependencyGraph"], "torch.Tensor"]


def l1_norm(group: "Group", graph: "DependencyGraph") -> "torch.Tensor":
    """Sum of |w| over every filter (output row) of the group's producers."""
    return _filter_scores(group, graph, lambda rows: rows.abs().sum(dim=1))


def l2_norm(group: "Group", graph: "DependencyGraph") -> "torch.Tensor":
    """Euclidean norm of each filter of the group's producers, summed over producers."""
    return _filter_scores(group, graph, lambda rows: rows.pow(2).sum(dim=1).sqrt())


def bn_scale(group: "Group", graph: "DependencyGraph") -> "torch.Tensor":
    """|gamma| of the group's affine norms (network slimming); a group with none falls back to :func:`l2_norm`."""
    norms = [m for m in group.members if m.role == "channel" and _is_affine_norm(m.module)]
    if not norms:
        return l2_norm(group, graph)
    return _accumulate(group, graph, norms, lambda m: m.module.weight.detach().abs())


def _filter_scores(group: "Group", graph: "DependencyGraph", reduce: Callable) -> "torch.Tensor":
    producers = [m for m in group.members if m.role == "out"]
    return _accumulate(group, graph, producers, lambda m: reduce(_rows(m.module)))


def _accumulate(group: "Group", graph: "DependencyGraph", members: list["Member"],
                per_channel: Callable[["Member"], "torch.Tensor"]) -> "torch.Tensor":
    """Add each member's per-channel score into the score of the class its channel belongs to."""
    import torch

    index = {c: i for i, c in enumerate(group.classes)}
    scores = torch.zeros(len(group.classes), dtype=torch.float64)
    for member in members:
        values = per_channel(member).double()
        for position, label in enumerate(member.labels):
            slot = index.get(graph.find(label))
            if slot is not None:
                scores[slot] += values[position]
    return scores


def _rows(module) -> "torch.Tensor":
    """The weight as (out, everything else), whatever the layer (a transposed conv stores (in, out, ...))."""
    from torch import nn

    w = module.weight.detach()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        w = w.transpose(0, 1)
    return w.reshape(w.shape[0], -1)


def _is_affine_norm(module) -> bool:
    from torch import nn

    norms = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)
    return isinstance(module, norms) and getattr(module, "weight", None) is not None
