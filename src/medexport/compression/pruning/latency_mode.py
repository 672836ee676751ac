"""Latency mode of the pruning and merging passes: per-group channel counts chosen for a measured latency target.

``PruneConfig(latency=0.5)`` asks for half the original's latency on ``config.backend``. The schedule
(:func:`~medexport.compression.pruning.schedule.run_schedule`) reaches it in ``steps`` steps, the budget of step
``s`` being ``1 - (1 - latency) * s / steps`` of the original's time; before each step :class:`LatencyPlanner`:

1. scores every class of every prunable group of the *current* model (the pass's importance, normalised by the
   group's mean so groups compare; kept importance of a group at ``k`` channels = the sum of its top classes),
2. prices each candidate count (the config's rounding, at most ``max_ratio`` removed from the original width)
   from the latency table (:mod:`.latency_table`, measured once on the original), the other groups at their
   current widths (HALP's per-step linearisation), and snaps the candidates to the staircase (a count that buys
   less than ``STEP`` of the model's time over the next wider one is dropped),
3. solves the multiple-choice knapsack (:func:`.knapsack.solve`) and checks the answer with the table's joint
   model (a conv narrowed on both sides saves less than the two single savings summed); while that predicts
   over budget, the knapsack budget is tightened by the excess and solved again.

After the last step the result is timed whole beside the original (median, interleaved); when it misses the
target by more than ``tolerance``, up to ``schedule.CORRECTIONS`` further steps aim at the target scaled by predicted
over measured. Predicted and measured latency, the table's build time and its staircase go into the record.
The table is calibrated against the whole model (:meth:`.latency_table.LatencyTable.calibrate`): first with
the original's groups all at half width, pruned and timed beside the original, then after every step but the
last with the model as that step left it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medexport.compression.pruning import importance as scores
from medexport.compression.pruning.knapsack import snap, solve

if TYPE_CHECKING:
    from torch import nn

    from collections.abc import Callable

    from medexport.compression.pruning.config import PruneConfig
    from medexport.compression.pruning.dependency import DependencyGraph
    from medexport.compression.pruning.importance import Importance

STEP = 0.002  # of the model's time: a cheaper count that saves less than this is on the same stair
SOLVES = 6  # knapsack solves per step while the joint model predicts over budget
RATIOS = 33  # candidate removal ratios from 0 to max_ratio, rounded by the config


class LatencyPlanner:
    """The latency table of ``model``'s prunable groups and the per-step choice of their widths."""

    def __init__(self, model: "nn.Module", input_shape: tuple[int, ...], config: "PruneConfig",
                 graph: "DependencyGraph", prunable: list[str], narrow: "Callable[[dict], nn.Module]") -> None:
        from medexport.compression.pruning.latency_table import measure

        self.config, self.input_shape = config, tuple(input_shape)
        groups = [g for g in graph.groups if g.name in prunable]
        self.table = measure(model, self.input_shape, graph, groups, config.backend, config.threads)
        self.original = dict(self.table.channels)
        self.history: list[dict] = []
        half = {name: config.kept_channels(channels, 0.5) for name, channels in self.original.items()}
        self.table.calibrate(half, self.measure(model, narrow(half)))

    def budget(self, step: int) -> float:
        """Step ``step``'s latency budget, a fraction of the original's time."""
        return 1 - (1 - self.config.latency) * step / self.config.steps

    def targets(self, model: "nn.Module", importance: "Importance", budget: float,
                locked: dict[str, str]) -> dict[str, int]:
        """``{group: channels to keep}`` for the groups that narrow, chosen for ``budget`` on ``model`` as it is."""
        from medexport.compression.pruning.dependency import analyze
        from medexport.graph import capture

        graph = analyze(capture(model, self.input_shape), model)
        current = {g.name: g.channels for g in graph.groups if g.name in self.original}
        options = {}
        for group in graph.groups:
            if group.name not in current or group.name in locked:
                continue
            options[group.name] = self._options(group, graph, current, importance)
        whole = self.table.whole
        now = self.table.total(current)
        allowed = budget * whole - now  # summed change of the groups' costs
        floor = sum(min(cost for _, cost, _ in o) for o in options.values() if o)
        choice = dict(current)
        for _ in range(SOLVES):
            choice = {**current, **solve(options, max(allowed, floor))}
            excess = self.table.total(choice) - budget * whole
            if excess <= 1e-9 * whole or allowed <= floor:
                break  # within budget, or already the narrowest widths allowed (the record shows the miss)
            allowed -= excess
        predicted = self.table.predict(choice)
        self.history.append({"budget": round(budget, 4), "predicted": round(predicted, 4),
                             "kept": {n: k for n, k in choice.items() if k < current[n]}})
        return {n: k for n, k in choice.items() if k < current[n]}

    def _options(self, group, graph: "DependencyGraph", current: dict[str, int], importance: "Importance") -> list:
        """(channels, cost change, kept importance) per candidate count of ``group``, snapped to the staircase."""
        name, now = group.name, current[group.name]
        values = np.sort(scores.normalised(importance(group, graph)).detach().double().numpy())[::-1]
        cumulative = np.concatenate([[0.0], np.cumsum(values)])
        layers = self.table.touching(name)
        base = sum(layer.time(*layer.widths(current, self.original)) for layer in layers)
        counts = {self.config.kept_channels(self.original[name], r)
                  for r in np.linspace(0.0, self.config.max_ratio, RATIOS)}
        out = []
        for kept in sorted(c for c in counts | {now} if c <= now):
            trial = {**current, name: kept}
            cost = sum(layer.time(*layer.widths(trial, self.original)) for layer in layers) - base
            n_keep = max(1, round(kept * len(group.classes) / now))
            out.append((kept, cost, float(cumulative[min(n_keep, len(values))])))
        return snap(out, STEP * self.table.whole)

    def observe(self, original: "nn.Module", model: "nn.Module") -> float:
        """Time ``model`` beside ``original`` and re-scale the table to it (after each step but the last: the next
        step's budget is then priced from what this one measured, not only from the half-width calibration)."""
        measured = self.measure(original, model)
        self.table.calibrate(self._widths(model), measured)
        return measured

    def _widths(self, model: "nn.Module") -> dict[str, int]:
        from medexport.compression.pruning.dependency import analyze
        from medexport.graph import capture

        graph = analyze(capture(model, self.input_shape), model)
        return {g.name: g.channels for g in graph.groups if g.name in self.original}

    def predict(self, model: "nn.Module") -> float:
        """The table's latency ratio for ``model`` (a pruned copy of the original)."""
        return self.table.predict(self._widths(model))

    def measure(self, original: "nn.Module", model: "nn.Module") -> float:
        """``model``'s median latency over ``original``'s, timed side by side on the backend (kept in the history)."""
        from medexport.compression._latency import compare

        before, after = compare([original, model], self.input_shape, self.config.backend,
                                threads=self.config.threads, rounds=15)
        self.history.append({"measured": round(after / before, 4), "predicted": round(self.predict(model), 4)})
        return after / before

    def record(self, predicted: float, measured: float) -> dict:
        return {"target": self.config.latency, "backend": self.config.backend, "threads": self.config.threads,
                "predicted": round(predicted, 4), "measured": round(measured, 4),
                "table_seconds": round(self.table.seconds, 2), "layers_measured": self.table.measured,
                "layer_scale": round(self.table.scale, 3),
                "steps": self.history, "staircase": self.table.staircase()}
