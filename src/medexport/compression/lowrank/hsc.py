"""Hierarchical spatio-channel clustering (HSC) with a low-rank SVD per cluster, as dense grouped convs.

After Hamlomo et al. (arXiv 2604.23375): on calibration images, each layer's input feature maps are
split into spatial regions, channels are clustered by their co-activation across those regions, and
every cluster's slice of the weight, ``W[:, cluster]`` (out x cluster x kernel), gets its own
truncated SVD. Emitted as two dense layers (DESIGN decision 4):

    grouped conv kxk (groups = clusters, r outputs per cluster)  ->  1x1 conv (clusters * r -> out)

(a transposed conv keeps its type and stride in the grouped layer).

The grouped conv wants each cluster's channels contiguous; that order is folded into the producing
conv and its BatchNorm (:mod:`._permute`), and the 1x1 conv restores the output order for free. A layer
fed by a shared tensor keeps contiguous channel blocks as its clusters. A grouped conv has one width
per group, so the rank is adaptive per layer (the allocator, energy or VBMF picks it) and equal across
a layer's clusters. Example::

    config = HSCConfig(budget=3, calibration=ref.calibration()[:32], regions=2, clusters=4)
    small, record = get_pass("hsc").apply(model, ref.input_shape, config)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medexport.compression.lowrank.config import LowRankConfig
from medexport.compression.lowrank.decompositions import Decomposition, _LowRankMatrix, _like, _pointwise, energy_rank
from medexport.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from medexport.compression._layers import LayerInfo


@dataclass(frozen=True)
class HSCConfig(LowRankConfig):
    """A :class:`LowRankConfig` plus HSC's knobs: ``regions`` per spatial axis and ``clusters`` per layer.

    Defaults from ``benchmarks/lowrank.py --tables hsc-sweep`` on the reference classifier (post-training):
    2 regions per axis beat 1 and 4 at both budgets; 4 clusters gave the best macro-F1 summed over 3x and
    6x (2 clusters were best at 3x alone, near chance at 6x; 8 were near chance). ``calib_images`` caps
    the images read.
    """

    regions: int = 2
    clusters: int = 4
    calib_images: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.regions < 1 or self.clusters < 1 or self.calib_images < 1:
            raise InputError("regions, clusters and calib_images must be at least 1")

    def images_used(self) -> int | None:
        """The first ``calib_images`` are clustered on (and the latency allocator's sample, if larger, read too)."""
        if self.calibration is None:
            return None
        return max(min(len(self.calibration), self.calib_images), super().images_used() or 0)


def cluster_count(channels: int, clusters: int) -> int:
    """The most clusters (at most ``clusters``) that split ``channels`` evenly with at least 4 channels each."""
    return max([g for g in range(1, clusters + 1) if channels % g == 0 and channels // g >= 4] or [1])


class HSC(Decomposition):
    """Per-cluster truncated SVD of a conv's weight, input channels taken in ``order`` (clusters contiguous)."""

    method = "hsc"

    def __init__(self, layer: "LayerInfo", order: "np.ndarray", groups: int) -> None:
        import torch

        super().__init__(layer)
        self.order, self.groups = torch.as_tensor(order), groups
        w = self.weight[:, self.order]
        size = w.shape[1] // groups
        self.blocks = [_LowRankMatrix(w[:, g * size:(g + 1) * size].reshape(w.shape[0], -1)) for g in range(groups)]
        full = self.full_ranks()[0]
        self.squared = torch.stack([b.squared[:full] for b in self.blocks])  # (groups, full)
        self.kept = self.squared.sum(0).cumsum(0) / max(self.norm2, 1e-300)

    @staticmethod
    def unsupported(layer: "LayerInfo") -> str | None:
        from torch import nn

        module = layer.module
        if not isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            return f"HSC clusters the channels of a 2D/3D convolution, not a {layer.kind}"
        if module.groups != 1:
            return f"grouped conv (groups={module.groups})"
        return None

    def full_ranks(self) -> tuple[int, ...]:
        layer = self.layer
        return (min(layer.out_channels, layer.in_channels // self.groups * math.prod(layer.kernel)),)

    def unfoldings(self) -> tuple["torch.Tensor", ...]:
        import torch

        size = self.weight.shape[1] // self.groups
        w = self.weight[:, self.order]
        # VBMF on the cluster with the most signal sets the (shared) rank
        blocks = [w[:, g * size:(g + 1) * size].reshape(w.shape[0], -1) for g in range(self.groups)]
        return (max(blocks, key=lambda b: float(torch.linalg.matrix_norm(b))),)

    def step(self, round_to: int) -> int:
        """Rank step per cluster that keeps the grouped conv's total width (clusters x r) on the ``round_to`` grid:
        clusters x r is a multiple of ``round_to`` exactly when r is a multiple of round_to / gcd(round_to, clusters)."""
        return max(1, round_to // math.gcd(round_to, self.groups))

    def options(self, round_to: int) -> list:
        return super().options(self.step(round_to))

    def rounded(self, ranks: tuple[int, ...], round_to: int) -> tuple[int, ...]:
        return super().rounded(ranks, self.step(round_to))

    def ratio_ranks(self, ratio: float, round_to: int) -> tuple[int, ...]:
        return super().ratio_ranks(ratio, self.step(round_to))

    def macs(self, ranks: tuple[int, ...]) -> int:
        (r,), layer = ranks, self.layer
        first_positions = layer.n_in if layer.transposed else layer.n_out
        return r * (first_positions * layer.in_channels * math.prod(layer.kernel)
                    + layer.n_out * self.groups * layer.out_channels)

    def error2(self, ranks: tuple[int, ...]) -> float:
        return max(0.0, 1.0 - float(self.kept[ranks[0] - 1]))

    def energy_ranks(self, energy: float) -> tuple[int, ...]:
        return (energy_rank(self.squared.sum(0), energy),)

    def build(self, ranks: tuple[int, ...]) -> "nn.Module":
        import torch
        from torch import nn

        (r,), module, layer = ranks, self.layer.module, self.layer
        size = layer.in_channels // self.groups
        first_w = torch.cat([b.right[:r] for b in self.blocks]).reshape(self.groups * r, size, *layer.kernel)
        last_w = torch.cat([b.left[:, :r] for b in self.blocks], dim=1)
        if layer.transposed:  # a grouped ConvTranspose stores (in, out / groups, *k): hand _like its transpose
            g, m = self.groups, size
            first_w = first_w.reshape(g, r, m, *layer.kernel).transpose(1, 2).reshape(g * m, r, *layer.kernel)
            first_w = first_w.transpose(0, 1)
        first = _like(module, layer.in_channels, self.groups * r, first_w, groups=self.groups)
        last = _pointwise(self.groups * r, layer.out_channels, len(layer.kernel), last_w, module.bias, module.weight)
        return nn.Sequential(first, last)

    def build_standalone(self, ranks: tuple[int, ...]) -> "nn.Module":
        """The chain behind a channel gather (only for measuring the layer alone; the pass folds the order away)."""
        from torch import nn

        class Reorder(nn.Module):
            def __init__(self, order: "torch.Tensor") -> None:
                super().__init__()
                self.register_buffer("order", order.clone())

            def forward(self, x: "torch.Tensor") -> "torch.Tensor":
                return x.index_select(1, self.order)

        return nn.Sequential(Reorder(self.order), self.build(ranks))
