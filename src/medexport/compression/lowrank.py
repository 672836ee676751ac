"""The low-rank passes: ``svd``, ``spatial-svd`` and ``tucker``, one registered class each.

They share one schedule (:class:`LowRankPass`): find the layers, drop the excluded and unsupported
ones, decompose the rest once, pick ranks (ratio, energy or budget), swap the dense chains in.
A new method is a :class:`~medexport.compression.decompositions.Decomposition` plus three lines here.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from medexport.compression import _layers
from medexport.compression._registry import register_pass
from medexport.compression.allocator import select_ranks
from medexport.compression.base import CompressionPass, model_macs
from medexport.compression.config import LowRankConfig
from medexport.compression.decompositions import SVD, Decomposition, SpatialSVD, Tucker2
from medexport.compression.record import LayerRecord, PassRecord

if TYPE_CHECKING:
    from torch import nn


class LowRankPass(CompressionPass):
    """Factorize every allowed layer with ``decomposition`` at the ranks ``LowRankConfig`` asks for."""

    decomposition: type[Decomposition] = Decomposition
    family = "lowrank"
    config_type = LowRankConfig

    def apply_impl(self, model: "nn.Module", input_shape: tuple[int, ...],
                   config: LowRankConfig) -> tuple["nn.Module", PassRecord]:
        layers = _layers.discover(model, input_shape)
        skipped = _layers.excluded(layers, config)
        decomps: dict[str, Decomposition] = {}
        for layer in layers:
            reason = skipped.get(layer.name) or self.decomposition.unsupported(layer)
            if reason:
                skipped[layer.name] = reason
            else:
                decomps[layer.name] = self.decomposition(layer)
        macs_before = model_macs(model, input_shape)
        ranks = select_ranks(decomps, config, macs_before)
        records = []
        for name, d in decomps.items():
            if name not in ranks:
                skipped[name] = "factorized MACs would not be smaller"
                continue
            _layers.replace(model, name, d.build(ranks[name]))
            records.append(LayerRecord(name, self.name, d.layer.kind, tuple(ranks[name]), d.layer.macs,
                                       d.macs(ranks[name]), math.sqrt(d.error2(ranks[name]))))
        record = PassRecord(self.name, config.to_dict(), macs_before, model_macs(model, input_shape),
                            records, skipped)
        return model, record


@register_pass("svd")
class SVDPass(LowRankPass):
    """Global SVD (the papers' baseline) of Linear, Conv and ConvTranspose layers."""

    decomposition = SVD


@register_pass("spatial-svd")
class SpatialSVDPass(LowRankPass):
    """Spatial SVD of Conv2d: kxk -> kx1 then 1xk."""

    decomposition = SpatialSVD


@register_pass("tucker")
class TuckerPass(LowRankPass):
    """Tucker-2 of Conv/ConvTranspose 2D and 3D: 1x1 -> core -> 1x1."""

    decomposition = Tucker2
