"""Per-layer ranks from a rule: a rank ratio, an energy threshold, or a whole-model MACs (or weights) budget.

The budget allocator is greedy on a weight-space proxy, the way AIMET's greedy ratio selection is
greedy on measured accuracy, but with no inference at all (seconds, not hours): a layer's damage
is the fraction of its weight's squared singular-value energy a rank choice drops, and each step
takes the move (any layer, any cheaper rank, several grid steps at once so non-convex MACs curves
are not a trap) that loses the least energy per MAC saved. The last step is the cheapest move that
lands inside the tolerance band under the target (off the rounding grid for that one step when no
grid rank lands there), so the achieved ratio lands within it. Only ranks whose factorized cost is
below the layer's own are ever offered. The same greedy serves a budget on weights
(``budget_metric="params"``: the model's parameter count divided by the budget).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medexport.errors import InputError

if TYPE_CHECKING:
    from medexport.compression.lowrank.config import LowRankConfig
    from medexport.compression.lowrank.decompositions import Decomposition


def select_ranks(decomps: dict[str, "Decomposition"], config: "LowRankConfig", total_macs: int, *,
                 total_params: int | None = None, model=None,
                 input_shape: tuple[int, ...] | None = None) -> dict[str, tuple[int, ...]]:
    """Ranks per layer name under ``config``'s rule; layers left out are not factorized.

    A budget on weights needs ``total_params``; the latency rule measures on the backend and needs ``model``
    and ``input_shape``.
    """
    if config.latency is not None:
        from medexport.compression.lowrank.latency_allocator import allocate_latency

        return allocate_latency(decomps, config, model, input_shape, total_macs)
    if config.budget is not None:
        total = total_params if config.budget_metric == "params" else total_macs
        if total is None:
            raise InputError("a weights budget needs the model's parameter count (total_params)")
        return allocate_budget(decomps, total, config.budget, config.round_to, config.tolerance,
                               config.budget_metric)
    chosen: dict[str, tuple[int, ...]] = {}
    for name, d in decomps.items():
        if config.rank_ratio is not None:
            ranks = d.ratio_ranks(config.rank_ratio, config.round_to)
        elif config.vbmf:
            ranks = d.rounded(d.vbmf_ranks(), config.round_to)
        else:
            ranks = d.rounded(d.energy_ranks(config.energy), config.round_to)
        if not config.only_if_smaller or d.macs(ranks) < d.layer.macs:
            chosen[name] = ranks
    return chosen


def allocate_budget(decomps: dict[str, "Decomposition"], total: int, budget: float, round_to: int,
                    tolerance: float, metric: str = "macs") -> dict[str, tuple[int, ...]]:
    """Greedy ranks bringing the model's ``total`` ``metric`` ("macs" or "params") down to ``total / budget``
    (within ``tolerance``).

    Ranks stay on the ``round_to`` grid (sizes the hardware likes) unless no grid move lands the last step
    inside the band, then that one step may take any rank, or the grid cannot reach the budget at all, then
    every later step may (both on layers with at most ``_FINE_LIMIT`` rank choices).
    """
    start = float(total)
    target = start / budget
    floor = start / (budget * (1 + tolerance))
    names = list(decomps)
    coarse = [_choices(decomps[n], round_to, metric) for n in names]
    cur_cost = np.array([_layer_cost(decomps[n], metric) for n in names], dtype=np.float64)
    cur_err = np.zeros(len(names))
    chosen: dict[int, tuple[int, ...]] = {}
    left = start
    on_grid = True
    while left > target:
        ratio_move, band_move = _moves(coarse, cur_cost, cur_err, left, target, floor)
        if ratio_move is None and on_grid and round_to > 1:  # the grid cannot get there: any rank may
            coarse, on_grid = _fine(decomps, names, coarse, metric), False
            continue
        if ratio_move is None:
            what = "weights" if metric == "params" else "MACs"
            raise InputError(f"a {budget:g}x {what} budget is out of reach: factorizing every allowed layer "
                             f"gives {start / left:.2f}x (exclude fewer layers or ask for less)")
        pool, (li, oi) = coarse, ratio_move
        if left - (cur_cost[li] - coarse[li].cost[oi]) <= target:  # the last step
            if band_move is None and round_to > 1:
                fine = _fine(decomps, names, coarse, metric)
                _, band_move = _moves(fine, cur_cost, cur_err, left, target, floor)
                pool = fine if band_move is not None else coarse
            if band_move is not None:
                li, oi = band_move
        choice = pool[li]
        left -= cur_cost[li] - choice.cost[oi]
        cur_cost[li], cur_err[li] = choice.cost[oi], choice.err[oi]
        chosen[li] = choice.ranks[oi]
    return {names[li]: ranks for li, ranks in chosen.items()}


_FINE_LIMIT = 20_000


def _fine(decomps: dict[str, "Decomposition"], names: list[str], coarse: list["_Choices"],
          metric: str) -> list["_Choices"]:
    """Every rank (not only the grid) on layers with at most ``_FINE_LIMIT`` rank choices."""
    return [_choices(decomps[n], 1, metric) if math.prod(decomps[n].full_ranks()) <= _FINE_LIMIT else coarse[i]
            for i, n in enumerate(names)]


def _layer_cost(d: "Decomposition", metric: str) -> int:
    return d.layer.params if metric == "params" else d.layer.macs


@dataclass
class _Choices:
    """A layer's rank choices whose cost (MACs or weights) is below the layer's own, as arrays."""

    ranks: list[tuple[int, ...]]
    cost: np.ndarray
    err: np.ndarray


def _choices(d: "Decomposition", round_to: int, metric: str = "macs") -> _Choices:
    """Choices cheaper than the layer in ``metric`` and never dearer in MACs (a weights budget must not slow it)."""
    options = [o for o in d.options(round_to) if o.cost(metric) < _layer_cost(d, metric) and o.macs < d.layer.macs]
    return _Choices([o.ranks for o in options], np.array([o.cost(metric) for o in options], dtype=np.float64),
                    np.array([o.error2 for o in options], dtype=np.float64))


def _moves(choices: list[_Choices], cur_cost: np.ndarray, cur_err: np.ndarray, total: float, target: float,
           floor: float) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(layer, option) of the least energy lost per unit of cost saved, and of the least lost landing in
    [floor, target]."""
    best, band = (np.inf, None), (np.inf, None)
    for li, c in enumerate(choices):
        saved = cur_cost[li] - c.cost
        valid = saved > 0
        if not valid.any():
            continue
        lost = c.err - cur_err[li]
        score = np.where(valid, lost / np.where(valid, saved, 1.0), np.inf)
        oi = int(np.argmin(score))
        if best[1] is None or score[oi] < best[0]:
            best = (score[oi], (li, oi))
        after = total - saved
        landing = valid & (after <= target) & (after >= floor)
        if landing.any():
            oi = int(np.argmin(np.where(landing, lost, np.inf)))
            if band[1] is None or lost[oi] < band[0]:
                band = (lost[oi], (li, oi))
    return best[1], band[1]
