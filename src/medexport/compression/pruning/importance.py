"""Importance: one score per class of a group, higher means keep; the lowest-scored classes are removed.

Scores sum over the group's members, so a residual stream is judged by all the convs writing into
it, and a GroupNorm class by all of its channels. :func:`activation` scores from forward passes on
calibration images instead of weights (the ILR idea of the filter-merging paper); :func:`normalised`
makes scores of different groups comparable for a global ranking. Example::

    scores = l2_norm(group, graph)   # tensor of len(group.classes)
    scores = activation(calibration_images)(group, graph)
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


def activation(images, batch_size: int = 8) -> Importance:
    """Score each class by what the layers reading it actually receive on ``images`` (forward passes only).

    Every consumer of a channel (a conv, transposed conv or Linear with it among its inputs) records, per
    input channel, the mean absolute activation and the activation's standard deviation over the
    calibration images; a class scores the sum over its consumers of mean|a| + std(a) (a channel that is
    small *and* constant carries least). Unlike Taylor saliency no gradients are needed. The statistics
    are gathered once per analysed graph, with one pass over ``images`` through ``graph.root``.
    """
    cache: dict[int, dict[int, "torch.Tensor"]] = {}

    def score(group: "Group", graph: "DependencyGraph") -> "torch.Tensor":
        if id(graph) not in cache:
            cache.clear()
            cache[id(graph)] = _consumer_statistics(graph, images, batch_size)
        stats = cache[id(graph)]
        consumers = [m for m in group.members if m.role == "in" and id(m.module) in stats]
        if not consumers:
            return l2_norm(group, graph)
        return _accumulate(group, graph, consumers, lambda m: stats[id(m.module)])

    return score


def normalised(scores: "torch.Tensor") -> "torch.Tensor":
    """Scores divided by their group's mean, so that groups of different scale rank on one list."""
    mean = float(scores.mean()) if len(scores) else 0.0
    return scores / mean if mean > 0 else scores


def _consumer_statistics(graph: "DependencyGraph", images, batch_size: int) -> dict[int, "torch.Tensor"]:
    """``{id(module): mean|a| + std(a) per input channel}`` for every consumer in ``graph``."""
    from medexport.compression._hooks import each_input

    sums: dict[int, list] = {}

    def visit(module, x):
        x = x.double()
        dims = [0] + list(range(2, x.dim()))
        n = x.numel() // x.shape[1]
        acc = sums.setdefault(id(module), [0, 0.0, 0.0, 0.0])
        acc[0] += n
        acc[1] = acc[1] + x.abs().sum(dims)
        acc[2] = acc[2] + x.sum(dims)
        acc[3] = acc[3] + x.pow(2).sum(dims)

    each_input(graph.root, [m.module for m in graph.members if m.role == "in"], images, visit, batch_size)
    out = {}
    for key, (n, abs_sum, total, squares) in sums.items():
        mean = total / n
        out[key] = abs_sum / n + (squares / n - mean * mean).clamp(min=0).sqrt()
    return out


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
