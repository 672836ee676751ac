"""Per-layer ranks from a rule: a rank ratio, an energy threshold, or a whole-model MACs budget.

The budget allocator is greedy on a weight-space proxy, the way AIMET's greedy ratio selection is
greedy on measured accuracy, but with no inference at all (seconds, not hours): a layer's damage
is the fraction of its weight's squared singular-value energy a rank choice drops, and each step
takes the move (any layer, any cheaper rank, several grid steps at once so non-convex MACs curves
are not a trap) that loses the least energy per MAC saved. The last step is the cheapest move that
lands inside the tolerance band under the target, so the achieved ratio lands within it.
Only ranks whose factorized MACs are below the layer's own are ever offered.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medexport.errors import InputError

if TYPE_CHECKING:
    from medexport.compression.config import LowRankConfig
    from medexport.compression.decompositions import Decomposition


def select_ranks(decomps: dict[str, "Decomposition"], config: "LowRankConfig",
                 total_macs: int) -> dict[str, tuple[int, ...]]:
    """Ranks per layer name under ``config``'s rule; layers left out are not factorized."""
    if config.budget is not None:
        return allocate_budget(decomps, total_macs, config.budget, config.round_to, config.tolerance)
    chosen: dict[str, tuple[int, ...]] = {}
    for name, d in decomps.items():
        ranks = (d.ratio_ranks(config.rank_ratio, config.round_to) if config.rank_ratio is not None
                 else d.rounded(d.energy_ranks(config.energy), config.round_to))
        if not config.only_if_smaller or d.macs(ranks) < d.layer.macs:
            chosen[name] = ranks
    return chosen


def allocate_budget(decomps: dict[str, "Decomposition"], total_macs: int, budget: float, round_to: int,
                    tolerance: float) -> dict[str, tuple[int, ...]]:
    """Greedy ranks bringing ``total_macs`` down to ``total_macs / budget`` (within ``tolerance``)."""
    target = total_macs / budget
    floor = total_macs / (budget * (1 + tolerance))
    names, opt_ranks, opt_macs, opt_err = [], [], [], []
    for name, d in decomps.items():
        options = [o for o in d.options(round_to) if o.macs < d.layer.macs]
        if options:
            names.append(name)
            opt_ranks.append([o.ranks for o in options])
            opt_macs.append(np.array([o.macs for o in options], dtype=np.float64))
            opt_err.append(np.array([o.error2 for o in options]))
    cur_macs = np.array([decomps[n].layer.macs for n in names], dtype=np.float64)
    cur_err = np.zeros(len(names))
    chosen: dict[int, int] = {}  # layer index -> option index
    total = float(total_macs)
    while total > target:
        best, crossing = None, None  # (score, layer, option)
        for li in range(len(names)):
            saved = cur_macs[li] - opt_macs[li]
            lost = opt_err[li] - cur_err[li]
            valid = saved > 0
            if not valid.any():
                continue
            after = total - saved
            score = np.where(valid, lost / np.where(valid, saved, 1.0), np.inf)
            oi = int(np.argmin(score))
            if best is None or score[oi] < best[0]:
                best = (score[oi], li, oi)
            band = valid & (after <= target) & (after >= floor)
            if band.any():
                oi = int(np.argmin(np.where(band, lost, np.inf)))
                if crossing is None or lost[oi] < crossing[0]:
                    crossing = (lost[oi], li, oi)
        if best is None:
            reachable = total_macs / total
            raise InputError(f"a {budget:g}x MACs budget is out of reach: factorizing every allowed layer "
                             f"gives {reachable:.2f}x (exclude fewer layers or ask for less)")
        li, oi = best[1:]
        if total - (cur_macs[li] - opt_macs[li][oi]) <= target and crossing is not None:
            li, oi = crossing[1:]
        total -= cur_macs[li] - opt_macs[li][oi]
        cur_macs[li], cur_err[li] = opt_macs[li][oi], opt_err[li][oi]
        chosen[li] = oi
    return {names[li]: opt_ranks[li][oi] for li, oi in chosen.items()}
