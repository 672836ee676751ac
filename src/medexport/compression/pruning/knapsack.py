"""Multiple-choice knapsack: one option per group, most value within a cost budget, by dynamic programming.

Why DP and not HALP's greedy value/cost ratio: a group's cost by channel count is a staircase (a narrower conv
is often no faster until the next vector width), so its value-vs-cost curve is not concave, and the ratio
greedy can stop at a step that wastes budget (see ``tests/compression/test_latency_pruning.py``: the greedy
misses the known optimum there). The DP is exact up to the cost grid (costs are rounded *up* to it, so the
answer never exceeds the budget), and cheap: groups x options x ``bins`` steps (30 x 25 x 2000 for a U-Net).
Example::

    solve({"a": [(8, 1.0, 0.2), (16, 2.0, 1.0)], "b": [(8, 1.0, 0.5), (16, 2.5, 1.0)]}, budget=3.0)
    # {"a": 16, "b": 8}: cost 3.0, value 1.5
"""
from __future__ import annotations

import math

import numpy as np

from medexport.errors import InputError

Option = tuple[int, float, float]  # (channels kept, cost, value)


def solve(options: dict[str, list[Option]], budget: float, bins: int = 2000) -> dict[str, int]:
    """``{group: channels kept}`` maximizing the summed value with summed cost at most ``budget``.

    Every group takes exactly one of its options; InputError when even the cheapest choice of each exceeds it."""
    names = [name for name in options if options[name]]
    floor = sum(min(cost for _, cost, _ in options[n]) for n in names)
    if floor > budget + 1e-9 * max(1.0, abs(budget)):
        raise InputError(f"the latency budget is out of reach: the narrowest allowed widths cost {floor:.4g}, "
                         f"the budget is {budget:.4g}")
    spare = max(budget - floor, 0.0)
    unit = spare / bins if spare > 0 else 1.0
    best = np.zeros(bins + 1)  # best value with the spare cost used <= b
    picks = np.zeros((len(names), bins + 1), dtype=np.int64)
    for g, name in enumerate(names):
        cheapest = min(cost for _, cost, _ in options[name])
        new = np.full(bins + 1, -np.inf)
        for i, (_, cost, value) in enumerate(options[name]):
            extra = cost - cheapest
            steps = 0 if extra <= 1e-12 else math.ceil(extra / unit - 1e-9)
            if spare <= 0 and steps:
                continue
            if steps > bins:
                continue
            shifted = np.full(bins + 1, -np.inf)
            shifted[steps:] = best[:bins + 1 - steps] + value
            better = shifted > new
            new[better] = shifted[better]
            picks[g, better] = i
        best = new
    out, b = {}, bins
    for g in range(len(names) - 1, -1, -1):
        name = names[g]
        i = int(picks[g, b])
        kept, cost, _ = options[name][i]
        out[name] = kept
        extra = cost - min(c for _, c, _ in options[name])
        b -= 0 if extra <= 1e-12 else math.ceil(extra / unit - 1e-9)
    return out


def snap(option_list: list[Option], step: float) -> list[Option]:
    """The options on the steps of the staircase: walking from the widest down, an option is kept only when it
    costs at least ``step`` less than the last one kept (fewer channels that buy no time are never chosen)."""
    kept: list[Option] = []
    for option in sorted(option_list, key=lambda o: -o[0]):
        if not kept or option[1] <= kept[-1][1] - step:
            kept.append(option)
    return kept
