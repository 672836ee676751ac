"""Latency-mode ranks: meet ``latency x`` the original's measured latency on a backend with least damage.

1. Candidates per layer: a few ranks (1/8 .. 3/4 of full rank) rounded to multiples of 16 (8 on
   narrow layers), the sizes CPU kernels vectorise well.
2. Cost: each layer and each candidate chain is timed alone on the target backend from a single-layer
   ONNX (:class:`~medexport.compression._latency.LayerTimer`, cached). A candidate pays off when it is
   faster and each MAC it saves saves at least ``payoff`` x the layer's own milliseconds per MAC: the
   layer's realized speed-up keeps pace with its MACs (ideal) one. The rest are dropped. (Requiring the
   whole model's ms per MAC instead drops everything on small U-Nets, where the ops no rank changes
   take half the time.)
3. Damage: the relative change of the whole model's output on calibration images when that layer alone
   takes that candidate (one forward pass per candidate; AIMET's greedy ratio selection instead scores
   every layer x ratio on the validation metric). Without calibration images, the weight error.
4. Greedy: the move with least damage per millisecond saved, until the summed per-layer savings reach
   the target; then the compressed model is timed whole, and the savings asked for are scaled by what
   the per-layer sums missed, at most three rounds.
"""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import numpy as np

from medexport.compression import _layers
from medexport.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from medexport.compression.config import LowRankConfig
    from medexport.compression.decompositions import Decomposition

FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)


def hardware_rank(rank: float, full: int) -> int:
    """``rank`` rounded up to a multiple of 16 (8 below 64 channels, 4 below 16), within [step, full]."""
    step = 16 if full >= 64 else 8 if full >= 16 else 4 if full >= 8 else 1
    return min(full, max(step, math.ceil(rank / step) * step))


def candidate_ranks(d: "Decomposition") -> list[tuple[int, ...]]:
    """The layer's candidate ranks: each fraction of every full rank, hardware-rounded, fewer MACs only."""
    out = []
    for f in FRACTIONS:
        ranks = tuple(hardware_rank(f * full, full) for full in d.full_ranks())
        if ranks not in out and d.macs(ranks) < d.layer.macs:
            out.append(ranks)
    return out


def allocate_latency(decomps: dict[str, "Decomposition"], config: "LowRankConfig", model: "nn.Module",
                     input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Ranks per layer name bringing the measured latency on ``config.backend`` to ``config.latency`` x."""
    from medexport.compression._latency import LayerTimer

    timer = LayerTimer(config.backend, threads=config.threads)
    table = {}  # name -> [(ranks, ms)], the layer as it is first
    for name, d in decomps.items():
        ranks = candidate_ranks(d)
        own, *times = timer.times([d.layer.module, *(d.build(r) for r in ranks)], d.layer.in_shape)
        rows = [((), own)] + [(r, ms) for r, ms in zip(ranks, times)
                              if ms < 0.95 * own and own - ms >= config.payoff * own * (1 - d.macs(r) / d.layer.macs)]
        if len(rows) > 1:
            table[name] = rows
    timer.save()
    damage = _damage(model, decomps, table, config.calibration)
    base_ms = timer.compare([model], input_shape)[0]
    wanted = base_ms * (1 - config.latency)
    chosen: dict[str, tuple[int, ...]] = {}
    measured = base_ms
    for _ in range(3):
        chosen, predicted = _greedy(table, damage, wanted)
        if not chosen:
            break
        base_ms, measured = timer.compare([model, _compressed(model, decomps, chosen)], input_shape)
        if measured <= base_ms * config.latency * (1 + config.tolerance):
            return chosen
        achieved = base_ms - measured
        if predicted < wanted or achieved <= 0:
            break
        wanted = predicted * (base_ms * (1 - config.latency)) / achieved
    raise InputError(f"{config.latency:g}x of the {config.backend} latency ({base_ms:.2f} ms) is out of reach: "
                     f"the factorizations that pay off reach {measured / base_ms:.2f}x (ask for more latency, "
                     f"lower the payoff, or exclude fewer layers)")


def _greedy(table: dict, damage: dict, wanted: float) -> tuple[dict[str, tuple[int, ...]], float]:
    """Least damage per ms saved until ``wanted`` ms are saved (per-layer sums); returns (choice, saved)."""
    current = dict.fromkeys(table, 0)
    saved = 0.0
    while saved < wanted:
        best = None
        for name, rows in table.items():
            cur_ranks, cur_ms = rows[current[name]]
            for i, (ranks, ms) in enumerate(rows):
                if ms < cur_ms:
                    score = (damage[name, ranks] - damage[name, cur_ranks]) / (cur_ms - ms)
                    if best is None or score < best[0]:
                        best = (score, name, i, cur_ms - ms)
        if best is None:
            break
        _, name, i, gain = best
        current[name], saved = i, saved + gain
    return {name: table[name][i][0] for name, i in current.items() if i}, saved


def _damage(model: "nn.Module", decomps: dict, table: dict, images) -> dict:
    """(layer, ranks) -> relative squared change of the model output on calibration images (0 for the layer as is)."""
    import torch

    damage = {(name, ()): 0.0 for name in table}
    if images is None or not len(images):
        damage.update({(name, ranks): decomps[name].error2(ranks) for name, rows in table.items()
                       for ranks, _ in rows[1:]})
        return damage
    x = torch.from_numpy(np.ascontiguousarray(damage_images(images), dtype=np.float32))
    with torch.no_grad():
        reference = model(x)
        scale = float((reference**2).sum()) or 1.0
        for name, rows in table.items():
            original = model.get_submodule(name)
            try:
                for ranks, _ in rows[1:]:
                    _layers.replace(model, name, decomps[name].build_standalone(ranks))
                    damage[name, ranks] = float(((model(x) - reference) ** 2).sum()) / scale
            finally:
                _layers.replace(model, name, original)
    return damage


def damage_images(images: np.ndarray) -> np.ndarray:
    """The calibration images the damage estimate runs on: 8 2D images, or 2 3D volumes (each forward per candidate)."""
    return images[:8 if images.ndim == 4 else 2]


def _compressed(model: "nn.Module", decomps: dict, chosen: dict) -> "nn.Module":
    """A copy of ``model`` with the chosen chains in (channel orders unfolded: latency does not depend on them)."""
    small = copy.deepcopy(model)
    for name, ranks in chosen.items():
        _layers.replace(small, name, decomps[name].build(ranks))
    return small
