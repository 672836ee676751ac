"""Latency-mode ranks: bring the measured latency on a backend to ``latency`` x the original's with least
damage, while the whole model's realized speed-up stays at least ``payoff`` x its ideal (MACs) one.

1. Candidates per layer: a few ranks (1/8 .. 3/4 of full rank) rounded to multiples of 16 (8 on narrow
   layers), the sizes CPU kernels vectorise well; Tucker-2 also gets one-sided ones (one rank equal to the
   channels, that side's 1x1 folded into the core).
2. Savings, in context: the whole model with that one layer swapped is timed side by side with the original
   (:class:`~medexport.compression._latency.Timer`, low quantile, in chunks that each include the original);
   a swap's saving is the fraction of the original's time it removes, cached per machine and model
   structure. This sees what timing the layer alone misses (layouts, reorders, the kernel the backend picks
   for the neighbours). Swaps saving under ``MIN_SAVING`` are dropped: identical models timed side by side
   on the shared 2-core development box differ by 2-4 %.
3. Damage: the relative change of the whole model's output on calibration images when that layer alone
   takes that candidate (one forward pass per candidate; AIMET's greedy ratio selection instead scores
   every layer x ratio on the validation metric). Without calibration images, the weight error.
4. Path: greedy, the move with least damage per saved fraction, taken only while the predicted realized /
   ideal speed-up ((1 - MACs saved) / (1 - time saved), savings summed) stays at least ``payoff``.
5. Check: prefixes of the path around the target are compiled and timed whole, side by side with the
   original (median, what a user sees); the first one meeting the target with a measured realized/ideal of
   at least ``payoff`` is the answer. Single-swap savings are not additive (on the 2D zoo U-Net five of them
   summed to 57 % of the time where the model with all five saved 30 %), so when none meets it, the savings
   are scaled by measured over predicted and the path is built again, at most ``ROUNDS`` times.

The original is compiled once and timed in every batch beside the models it is compared with: the load on
the shared development box moved the same model's median latency from 6.0 to 10.8 ms between runs minutes
apart, so only ratios measured side by side hold.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medexport._outputs import prediction
from medexport.compression import _layers
from medexport.compression.lowrank.config import LowRankConfig, damage_images
from medexport.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from medexport.compression._latency import Timer
    from medexport.compression.lowrank.decompositions import Decomposition

FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)
MIN_SAVING = 0.01  # of the original's time: below it a swap's saving is measurement noise
CHUNK = 24         # swapped models compiled and timed at once (memory), each chunk beside the original
CHECKS = 10        # path prefixes timed whole per round
ROUNDS = 3


def hardware_rank(rank: float, full: int) -> int:
    """``rank`` rounded up to a multiple of 16 (8 below 64 channels, 4 below 16), within [step, full]."""
    step = 16 if full >= 64 else 8 if full >= 16 else 4 if full >= 8 else 1
    return min(full, max(step, math.ceil(rank / step) * step))


def candidate_ranks(d: "Decomposition") -> list[tuple[int, ...]]:
    """The layer's candidate ranks, fewer MACs only: each fraction of every full rank, hardware-rounded, and
    with two rank modes also each fraction of one mode with the other at full rank (a one-sided chain)."""
    full = d.full_ranks()
    out = []
    for f in FRACTIONS:
        cut = tuple(hardware_rank(f * r, r) for r in full)
        options = [cut] + ([(full[0], cut[1]), (cut[0], full[1])] if len(full) == 2 else [])
        out += [r for r in options if r not in out and d.macs(r) < d.layer.macs]
    return out


@dataclass(frozen=True)
class Row:
    """One choice for a layer: its ranks, the fraction of the model's time and of its MACs it saves."""

    ranks: tuple[int, ...]
    saved: float
    macs: float


def allocate_latency(decomps: dict[str, "Decomposition"], config: "LowRankConfig", model: "nn.Module",
                     input_shape: tuple[int, ...], total_macs: int) -> dict[str, tuple[int, ...]]:
    """Ranks per layer name bringing the measured latency on ``config.backend`` to ``config.latency`` x."""
    from medexport.compression._latency import Timer

    with Timer(config.backend, input_shape, threads=config.threads, rounds=20) as timer:
        base = timer.open(model)
        table = _screen(timer, base, model, decomps, config, total_macs)
        damage = _damage(model, decomps, table, config.calibration)
        scale, best = 1.0, None
        for _ in range(ROUNDS):
            path = _path(table, damage, config.payoff, scale)
            if not path:
                break
            checked = _check(timer, base, model, decomps, path, config.latency, table)
            paying = [(latency, choice) for choice, latency, ideal, _ in checked if 1 / latency >= config.payoff * ideal]
            for latency, choice in paying:
                if latency <= config.latency * (1 + config.tolerance):
                    return choice
            best = min([latency for latency, _ in paying] + ([best] if best else []), default=None)
            ratios = [(1 - latency) / predicted for _, latency, _, predicted in checked if predicted > 0]
            if not ratios or np.median(ratios) <= 0:
                break
            scale = float(np.median(ratios))  # measured over summed savings: the next path's savings are scaled by it
    reach = (f"the factorizations that pay off reach {best:.2f}x with realized/ideal at least {config.payoff:g}"
             if best else f"no factorization keeps realized/ideal at least {config.payoff:g}")
    raise InputError(f"{config.latency:g}x of the {config.backend} latency is out of reach: {reach} (ask for more "
                     f"latency, lower the payoff, or exclude fewer layers)")


def _screen(timer: "Timer", base: int, model: "nn.Module", decomps: dict, config: "LowRankConfig",
            total_macs: int) -> dict[str, list[Row]]:
    """name -> [Row], the layer as it is first, then the candidates whose in-context saving is measurable."""
    from medexport.compression._latency import SavingsCache

    cache = SavingsCache(config.backend, config.threads, model, timer.input_shape)
    swaps = [(name, ranks, d.build(ranks)) for name, d in decomps.items() for ranks in candidate_ranks(d)]
    pending = [s for s in swaps if cache.get(s[0], s[2]) is None]
    for start in range(0, len(pending), CHUNK):
        part = pending[start:start + CHUNK]
        handles = [timer.open(_swapped(model, {name: chain})) for name, _, chain in part]
        original, *times = timer.time([base, *handles], quantile=20)
        timer.close(handles)
        for (name, _, chain), ms in zip(part, times):
            cache.put(name, chain, 1 - ms / original)
    cache.save()
    table: dict[str, list[Row]] = {}
    for name, ranks, chain in swaps:
        d, saved = decomps[name], cache.get(name, chain)
        if saved >= MIN_SAVING:
            table.setdefault(name, [Row((), 0.0, 0.0)]).append(Row(ranks, saved, (d.layer.macs - d.macs(ranks)) / total_macs))
    return table


def _path(table: dict[str, list[Row]], damage: dict, payoff: float, scale: float) -> list[tuple[dict, float]]:
    """The greedy's choice after each move (least damage per predicted saving, predicted realized/ideal >= payoff),
    each with its predicted time saved (single-swap savings x ``scale``, summed)."""
    current = dict.fromkeys(table, 0)
    time_saved = macs_saved = 0.0
    path = []
    while True:
        best = None
        for name, rows in table.items():
            cur = rows[current[name]]
            for i, row in enumerate(rows):
                gain = scale * (row.saved - cur.saved)
                t, m = time_saved + gain, macs_saved + row.macs - cur.macs
                if gain <= 0 or 1 - m < payoff * (1 - t):
                    continue
                score = (damage[name, row.ranks] - damage[name, cur.ranks]) / gain
                if best is None or score < best[0]:
                    best = (score, name, i, t, m)
        if best is None:
            return path
        _, name, current[name], time_saved, macs_saved = best
        path.append(({n: table[n][i].ranks for n, i in current.items() if i}, time_saved))


def _check(timer: "Timer", base: int, model: "nn.Module", decomps: dict, path: list, target: float,
           table: dict) -> list[tuple[dict, float, float, float]]:
    """(choice, measured latency ratio, ideal speed-up, summed single-swap savings) for up to ``CHECKS`` path
    prefixes from just before the one predicted to meet ``target`` on, timed whole beside the original."""
    first = next((i for i, (_, saved) in enumerate(path) if 1 - saved <= target), len(path) - 1)
    tail = list(range(max(0, first - 2), len(path)))
    picks = sorted({tail[round(k)] for k in np.linspace(0, len(tail) - 1, min(CHECKS, len(tail)))})
    macs = {(name, row.ranks): row.macs for name, rows in table.items() for row in rows}
    saved = {(name, row.ranks): row.saved for name, rows in table.items() for row in rows}
    models = [_swapped(model, {name: decomps[name].build(r) for name, r in path[i][0].items()}) for i in picks]
    handles = [timer.open(m) for m in models]
    original, *times = timer.time([base, *handles], rounds=max(timer.rounds, 20))
    timer.close(handles)
    out = []
    for i, ms in zip(picks, times):
        choice = path[i][0]
        ideal = 1 / (1 - sum(macs[name, r] for name, r in choice.items()))
        out.append((choice, ms / original, ideal, sum(saved[name, r] for name, r in choice.items())))
    return out


def _damage(model: "nn.Module", decomps: dict, table: dict, images) -> dict:
    """(layer, ranks) -> relative squared change of the model output on calibration images (0 for the layer as is)."""
    import torch

    damage = {(name, ()): 0.0 for name in table}
    if images is None or not len(images):
        damage.update({(name, row.ranks): decomps[name].error2(row.ranks) for name, rows in table.items()
                       for row in rows[1:]})
        return damage
    x = torch.from_numpy(np.ascontiguousarray(damage_images(images), dtype=np.float32))
    with torch.no_grad():
        reference = prediction(model(x))
        scale = float((reference**2).sum()) or 1.0
        for name, rows in table.items():
            original = model.get_submodule(name)
            try:
                for row in rows[1:]:
                    _layers.replace(model, name, decomps[name].build_standalone(row.ranks))
                    damage[name, row.ranks] = float(((prediction(model(x)) - reference) ** 2).sum()) / scale
            finally:
                _layers.replace(model, name, original)
    return damage


def _swapped(model: "nn.Module", chains: dict[str, "nn.Module"]) -> "nn.Module":
    """A copy of ``model`` with these chains in (channel orders unfolded: latency does not depend on them)."""
    small = copy.deepcopy(model)
    for name, chain in chains.items():
        _layers.replace(small, name, chain)
    return small
