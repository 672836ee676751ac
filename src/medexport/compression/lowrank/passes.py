"""The low-rank passes: ``svd``, ``spatial-svd``, ``tucker`` and ``hsc``, one registered class each.

They share one schedule (:class:`LowRankPass`): find the layers, drop the excluded and unsupported
ones, decompose the rest once, pick ranks (ratio, energy, VBMF, MACs or weights budget, or measured latency),
swap the dense chains in. A new method is a
:class:`~medexport.compression.lowrank.decompositions.Decomposition` plus three lines here.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from medexport.compression import _layers
from medexport.compression.lowrank import options as lowrank_options
from medexport.compression._registry import register_pass
from medexport.compression.lowrank.allocator import select_ranks
from medexport.compression.base import CompressionPass, model_macs, param_count
from medexport.compression.lowrank.config import LowRankConfig
from medexport.compression.lowrank.decompositions import SVD, Decomposition, SpatialSVD, Tucker2
from medexport.compression.lowrank.hsc import HSC, HSCConfig, cluster_count
from medexport.compression.record import LayerRecord, PassRecord
from medexport.errors import InputError

if TYPE_CHECKING:
    from torch import nn


class LowRankPass(CompressionPass):
    """Factorize every allowed layer with ``decomposition`` at the ranks ``LowRankConfig`` asks for."""

    decomposition: type[Decomposition] = Decomposition
    family = "lowrank"
    config_type = LowRankConfig
    options = lowrank_options.OPTIONS

    def configure(self, given: dict, *, backend: str) -> LowRankConfig:
        return lowrank_options.configure(self.config_type, given, backend)

    def bind(self, config: LowRankConfig, data) -> LowRankConfig:
        return lowrank_options.bind(config, data, self.needs_calibration)

    def describe(self, config: LowRankConfig) -> str:
        return lowrank_options.describe(self.name, config)

    def reads(self, field: str, config: LowRankConfig) -> bool:
        """The latency rule's backend and payoff mean nothing to the other rank rules."""
        return config.latency is not None or field not in ("backend", "payoff")

    def apply_impl(self, model: "nn.Module", input_shape: tuple[int, ...],
                   config: LowRankConfig) -> tuple["nn.Module", PassRecord]:
        layers = _layers.discover(model, input_shape)
        skipped = _layers.excluded(layers, config)
        allowed = []
        for layer in layers:
            reason = skipped.get(layer.name) or self.decomposition.unsupported(layer)
            if reason:
                skipped[layer.name] = reason
            else:
                allowed.append(layer)
        decomps = self.decompose(model, allowed, config)
        macs_before = model_macs(model, input_shape)
        ranks = select_ranks(decomps, config, macs_before, total_params=param_count(model), model=model,
                             input_shape=input_shape)
        records = []
        for name, d in decomps.items():
            if name not in ranks:
                skipped[name] = ("left whole by the allocator (the target was met without it, or no rank pays)"
                                 if config.budget is not None or config.latency is not None
                                 else "factorized MACs would not be smaller")
                continue
            _layers.replace(model, name, d.build(ranks[name]))
            records.append(LayerRecord(name, self.name, d.layer.kind, tuple(ranks[name]), d.layer.macs,
                                       d.macs(ranks[name]), math.sqrt(d.error2(ranks[name]))))
        self.finish(model, {name: decomps[name] for name in ranks})
        record = PassRecord(self.name, config.to_dict(), macs_before, model_macs(model, input_shape),
                            records, skipped)
        return model, record

    def decompose(self, model: "nn.Module", layers: list[_layers.LayerInfo],
                  config: LowRankConfig) -> dict[str, Decomposition]:
        """Each allowed layer's factorization (computed once; ranks come later)."""
        return {layer.name: self.decomposition(layer) for layer in layers}

    def finish(self, model: "nn.Module", replaced: dict[str, Decomposition]) -> None:
        """Anything the swapped-in chains need from their neighbours (nothing, for most methods)."""


@register_pass("svd")
class SVDPass(LowRankPass):
    """Global SVD (the papers' baseline) of Linear, Conv and ConvTranspose layers."""

    decomposition = SVD


@register_pass("spatial-svd")
class SpatialSVDPass(LowRankPass):
    """Spatial SVD of Conv2d: kxk -> kx1 then 1xk."""

    decomposition = SpatialSVD


@register_pass("hsc")
class HSCPass(LowRankPass):
    """HSC: channels clustered by spatial co-activation on calibration images, one SVD per cluster."""

    decomposition = HSC
    config_type = HSCConfig
    needs_calibration = True

    def decompose(self, model: "nn.Module", layers: list[_layers.LayerInfo],
                  config: LowRankConfig) -> dict[str, Decomposition]:
        from medexport.compression.lowrank._coactivation import balanced_clusters, region_descriptors
        from medexport.compression.lowrank._permute import producer_chains

        if config.calibration is None or not len(config.calibration):
            raise InputError("hsc clusters channels on real calibration images: pass --calib (or use a reference "
                             "model, whose bundled calibration images are used)")
        descriptors = region_descriptors(model, layers, config.calibration[:config.calib_images], config.regions)
        self.chains = producer_chains(model, [layer.name for layer in layers])
        decomps = {}
        for layer in layers:
            groups = cluster_count(layer.in_channels, config.clusters)
            order = (balanced_clusters(descriptors[layer.name], groups) if self.chains[layer.name] is not None
                     else np.arange(layer.in_channels))
            decomps[layer.name] = HSC(layer, order, groups)
        return decomps

    def finish(self, model: "nn.Module", replaced: dict[str, Decomposition]) -> None:
        from medexport.compression.lowrank._permute import fold_order

        for name, d in replaced.items():
            if self.chains[name] is not None:
                fold_order(model, self.chains[name], d.order)


@register_pass("tucker")
class TuckerPass(LowRankPass):
    """Tucker-2 of Conv/ConvTranspose 2D and 3D: 1x1 -> core -> 1x1."""

    decomposition = Tucker2
