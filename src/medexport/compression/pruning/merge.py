"""Filter merging: cluster channels that carry the same signal and keep one per cluster (``merge``,
``merge-medoid``), instead of dropping the lowest-scored.

Same groups, targets and schedule as pruning (``PruneConfig``; guard rails and rollback included);
only the choice of classes and the weights change:

* **clusters**: each class is described by what its consumers receive on calibration images (sampled
  activations); classes are clustered by cosine distance with average-linkage hierarchical clustering
  (``scipy.cluster.hierarchy``), cut at the group's target count. A cluster's medoid stays.
* **consumers**: the layers reading a merged channel get its input weights added onto the survivor's,
  scaled by the least-squares factor that best expresses the merged activation through the survivor's
  (``a_j ≈ α a_k`` on that consumer's input), so a duplicated channel is absorbed exactly.
* **hybrid crossover** (``merge``): the survivor's filter is re-synthesised by linear regression so that
  its (normalised) output reproduces the element-wise max of its parents' outputs on the calibration
  images (the filter-merging paper's core idea), and the consumers receive the plain sum of the parents'
  input weights. It applies where a group has one ordinary conv producer followed by at most an
  eval-mode BatchNorm; elsewhere (residual groups, transposed convs, GroupNorm) it falls back to the
  medoid. Example::

    small, record = get_pass("merge").apply(model, (1, 1, 128, 128), PruneConfig(ratio=0.5, calibration=images))
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medexport.compression._hooks import each_input
from medexport.compression._registry import register_pass
from medexport.compression.pruning import importance as scores
from medexport.compression.pruning.prune import PrunePass, PrunePlan, lowest

if TYPE_CHECKING:
    import torch
    from torch import nn

    from medexport.compression.pruning.config import PruneConfig
    from medexport.compression.pruning.dependency import DependencyGraph, Group, Member

_IMAGES = 16  # calibration images used for merging statistics
_POSITIONS = 512  # sampled spatial positions per image and layer
_ROWS = 16384  # regression rows for a hybrid filter
_MIN_SCALE = 1e-6  # |gamma / sqrt(var + eps)| below this: the survivor keeps its medoid filter


class MergePass(PrunePass):
    """Keep one channel per cluster of similar channels; see the module docstring."""

    needs_calibration = True
    hybrid = False

    def __init__(self) -> None:
        self._samples: dict[int, dict[int, "torch.Tensor"]] = {}

    def importance_for(self, config: "PruneConfig"):
        return scores.activation(config.calibration)

    def _consumer_samples(self, graph: "DependencyGraph", images) -> dict[int, "torch.Tensor"]:
        if id(graph) not in self._samples:
            self._samples = {id(graph): _sample_inputs(graph, [m for m in graph.members if m.role == "in"],
                                                       images)}
        return self._samples[id(graph)]

    def choose(self, group: "Group", graph: "DependencyGraph", n_keep: int, importance,
               chosen: PrunePlan) -> list[int]:
        vectors = self._class_vectors(group, graph)
        if vectors is None:
            return lowest(group, graph, n_keep, importance, chosen)
        removed = []
        for cluster in _clusters(vectors, n_keep):
            medoid = _medoid(vectors, cluster)
            others = [group.classes[i] for i in cluster if i != medoid]
            if others:
                chosen.merges[group.classes[medoid]] = others
                removed += others
        return removed

    def _class_vectors(self, group: "Group", graph: "DependencyGraph") -> "torch.Tensor | None":
        """Row per class: its sampled activations at every consumer, concatenated; None if uneven."""
        import torch

        samples = self._consumer_samples(graph, self._calibration)
        columns: dict[int, list] = {c: [] for c in group.classes}
        for member in group.members:
            if member.role != "in" or id(member.module) not in samples:
                continue
            x = samples[id(member.module)]
            for position, label in enumerate(member.labels):
                c = graph.find(label)
                if c in columns:
                    columns[c].append(x[:, position])
        lengths = {sum(len(v) for v in cols) for cols in columns.values()}
        if len(lengths) != 1 or 0 in lengths:
            return None
        return torch.stack([torch.cat(columns[c]) for c in group.classes])

    def step(self, model, input_shape, config, targets=None, graph=None):
        self._calibration = config.calibration[:_IMAGES]
        self._samples = {}
        return super().step(model, input_shape, config, targets, graph)

    def before_slicing(self, model: "nn.Module", chosen: PrunePlan, config: "PruneConfig") -> None:
        graph = chosen.graph
        samples = self._consumer_samples(graph, self._calibration)
        hybrid_done = set()
        if self.hybrid:
            hybrid_done = _hybrid_filters(graph, chosen, self._calibration)
        consumers = [m for m in graph.members if m.role == "in"]
        for survivor, parents in chosen.merges.items():
            for member in consumers:
                _absorb(member, graph, survivor, parents, samples.get(id(member.module)),
                        plain_sum=survivor in hybrid_done)


def _sample_inputs(graph: "DependencyGraph", members: list["Member"], images) -> dict[int, "torch.Tensor"]:
    """``{id(module): (samples, channels)}`` inputs of ``members``' modules at fixed random positions."""
    import torch

    found: dict[int, list] = {}

    def visit(module, x):
        x = x.double()
        if x.dim() > 2:
            flat = x.flatten(2)  # (N, C, S)
            g = torch.Generator().manual_seed(flat.shape[2])
            idx = torch.randperm(flat.shape[2], generator=g)[:_POSITIONS]
            x = flat[:, :, idx].permute(0, 2, 1).reshape(-1, flat.shape[1])
        found.setdefault(id(module), []).append(x)

    each_input(graph.root, [m.module for m in members], images, visit)
    return {k: torch.cat(v) for k, v in found.items()}


def _cosine_distances(vectors: "torch.Tensor") -> "torch.Tensor":
    norms = vectors.norm(dim=1, keepdim=True)
    unit = vectors / norms.clamp(min=1e-12)
    distance = (1.0 - unit @ unit.T).clamp(min=0.0)
    dead = (norms[:, 0] == 0)
    distance[dead[:, None] & dead[None, :]] = 0.0  # two silent channels are the same channel
    distance.fill_diagonal_(0.0)
    return (distance + distance.T) / 2


def _clusters(vectors: "torch.Tensor", n_keep: int) -> list[list[int]]:
    """Exactly ``n_keep`` clusters of row indices, by average-linkage clustering on cosine distance."""
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform

    condensed = squareform(_cosine_distances(vectors).numpy(), checks=False)
    labels = cut_tree(linkage(condensed, method="average"), n_clusters=n_keep)[:, 0]
    return [[i for i, lab in enumerate(labels) if lab == c] for c in sorted(set(labels))]


def _medoid(vectors: "torch.Tensor", cluster: list[int]) -> int:
    """The cluster member with the smallest summed cosine distance to the others."""
    d = _cosine_distances(vectors[cluster])
    return cluster[int(d.sum(dim=1).argmin())]


def _absorb(member: "Member", graph: "DependencyGraph", survivor: int, parents: list[int], x, *,
            plain_sum: bool) -> None:
    """Add the parents' input columns of one consumer onto the survivor's (scaled by α unless ``plain_sum``)."""
    import torch
    from torch import nn

    positions = {c: [i for i, lab in enumerate(member.labels) if graph.find(lab) == c]
                 for c in (survivor, *parents)}
    if not positions[survivor]:
        return
    module = member.module
    dim = 0 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 1
    weight = module.weight.detach()
    with torch.no_grad():
        for parent in parents:
            for k, j in zip(positions[survivor], positions[parent]):
                alpha = 1.0
                if not plain_sum and x is not None:
                    ak, aj = x[:, k], x[:, j]
                    alpha = float((ak @ aj) / (ak @ ak)) if float(ak @ ak) > 0 else 0.0
                weight.index_add_(dim, torch.tensor([k]), alpha * weight.index_select(dim, torch.tensor([j])))


def _hybrid_filters(graph: "DependencyGraph", chosen: PrunePlan, images) -> set[int]:
    """Re-synthesise each eligible survivor's filter to output the max of its cluster's outputs.

    A survivor whose norm scale is (near) zero -- a slimmed or zero-initialised BatchNorm -- cannot be
    mapped back to pre-norm coordinates, and a fit that is not finite is not written: both keep the
    medoid (the survivor is left out of the returned set).
    """
    from torch import nn

    done = set()
    plans = {}
    for survivor, parents in chosen.merges.items():
        group = next(g for g in graph.groups if survivor in g.classes)
        producers = [m for m in group.members if m.role == "out"]
        extra = [m for m in group.members if m.role == "channel"]
        if len(producers) != 1 or len({id(m.module) for m in extra}) > 1:
            continue
        conv = producers[0].module
        norm = extra[0].module if extra else None
        if not _plain_conv(conv) or (norm is not None and (
                not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.training or norm.running_var is None
                or extra[0].labels != producers[0].labels)):
            continue
        plans.setdefault(id(conv), (producers[0], norm, []))[2].append((survivor, parents))
    if not plans:
        return done
    samples = _sample_producer_patches([p[0] for p in plans.values()], graph, images)
    for key, (producer, norm, merges) in plans.items():
        conv = producer.module
        patches, outputs = samples[key]
        post = _normalise(outputs, norm)
        for survivor, parents in merges:
            k = producer.labels.index(next(lab for lab in producer.labels if graph.find(lab) == survivor))
            members = [k] + [producer.labels.index(next(lab for lab in producer.labels if graph.find(lab) == p))
                             for p in parents]
            target = post[:, members].max(dim=1).values
            if norm is not None:  # back to the survivor's pre-norm coordinates
                gamma, beta = _affine(norm)
                scale = float(gamma[k] / (norm.running_var.double()[k] + norm.eps).sqrt())
                if abs(scale) < _MIN_SCALE:
                    continue
                target = (target - beta[k]) / scale + norm.running_mean.double()[k]
            if _fit_filter(conv, norm, k, patches, target):
                done.add(survivor)
    return done


def _plain_conv(module) -> bool:
    from torch import nn

    return (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed and module.groups == 1
            and module.padding_mode == "zeros" and isinstance(module.padding, tuple))


def _sample_producer_patches(producers: list["Member"], graph: "DependencyGraph", images) -> dict:
    """``{id(conv): (patches, outputs)}`` at sampled output positions, taken while the images run through."""
    found: dict[int, tuple] = {}

    def visit(module, x):
        found[id(module)] = _patches_and_outputs(module, x)

    each_input(graph.root, [p.module for p in producers], images, visit)
    return found


def _patches_and_outputs(conv, x: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """(rows, Cin*K) float64 input patches and (rows, Cout) conv outputs at up to ``_ROWS`` sampled output positions.

    The positions are drawn first and only their patches are gathered (stride, padding and dilation
    the layer's own, 1D to 3D alike), so memory is ``_ROWS`` x Cin*K whatever the volume size.
    """
    import torch
    import torch.nn.functional as F

    kernel = conv.weight.shape[2:]
    dims = len(kernel)
    padded = F.pad(x, [p for pad in reversed(conv.padding) for p in (pad, pad)])
    spatial = padded.shape[2:]
    out = [(spatial[i] - conv.dilation[i] * (kernel[i] - 1) - 1) // conv.stride[i] + 1 for i in range(dims)]
    total = len(x) * int(np.prod(out))
    g = torch.Generator().manual_seed(total)
    flat = torch.randperm(total, generator=g)[:_ROWS]
    coords = np.unravel_index(flat.numpy(), (len(x), *out))
    index = [torch.from_numpy(coords[0]).reshape(-1, *([1] * dims))]
    for i in range(dims):  # each axis: sampled output position * stride + kernel offset * dilation
        shape = [-1] + [1] * dims
        shape[1 + i] = kernel[i]
        start = torch.from_numpy(coords[1 + i]) * conv.stride[i]
        index.append((start[:, None] + torch.arange(kernel[i]) * conv.dilation[i]).reshape(shape))
    channels_last = padded.movedim(1, -1)  # (N, *spatial, Cin)
    gathered = channels_last[tuple(index)]  # (rows, *kernel, Cin)
    rows = gathered.movedim(-1, 1).reshape(len(flat), -1).double()  # the weight's (Cin, *kernel) order
    weight = conv.weight.detach().double().reshape(conv.weight.shape[0], -1)
    outputs = rows @ weight.T
    if conv.bias is not None:
        outputs = outputs + conv.bias.detach().double()
    return rows, outputs


def _affine(norm) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The norm's per-channel (gamma, beta) in float64; ones and zeros for ``affine=False``."""
    import torch

    if norm.weight is None:
        ones = torch.ones_like(norm.running_var, dtype=torch.float64)
        return ones, torch.zeros_like(ones)
    return norm.weight.detach().double(), norm.bias.detach().double()


def _normalise(outputs: "torch.Tensor", norm) -> "torch.Tensor":
    if norm is None:
        return outputs
    gamma, beta = _affine(norm)
    scale = gamma / (norm.running_var.double() + norm.eps).sqrt()
    return (outputs - norm.running_mean.double()) * scale + beta


def _fit_filter(conv, norm, k: int, patches: "torch.Tensor", target: "torch.Tensor") -> bool:
    """Ridge least squares for filter ``k`` and an intercept onto ``target``; False (nothing written) if not finite.

    The intercept goes into the conv's bias, or, for a bias-free conv, into the following norm's running
    mean (the same shift); with neither it is not fitted.
    """
    import torch

    intercept = conv.bias is not None or norm is not None
    design = torch.cat([patches, torch.ones(len(patches), 1, dtype=patches.dtype)], dim=1) if intercept else patches
    gram = design.T @ design
    ridge = 1e-6 * float(gram.diagonal().mean()) * torch.eye(len(gram), dtype=gram.dtype)
    solution = torch.linalg.solve(gram + ridge, design.T @ target)
    if not bool(torch.isfinite(solution).all()):
        return False
    with torch.no_grad():
        if conv.bias is not None:
            conv.bias[k] = solution[-1].to(conv.bias.dtype)
        elif intercept:
            norm.running_mean[k] -= solution[-1].to(norm.running_mean.dtype)
        conv.weight[k] = solution[:conv.weight[k].numel()].reshape(conv.weight.shape[1:]).to(conv.weight.dtype)
    return True


@register_pass("merge")
class HybridMergePass(MergePass):
    """Filter merging: clusters of similar channels become one hybrid-crossover filter."""

    hybrid = True


@register_pass("merge-medoid")
class MedoidMergePass(MergePass):
    """Filter merging: clusters of similar channels are replaced by their medoid."""
