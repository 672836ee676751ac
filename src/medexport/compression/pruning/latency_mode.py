"""Latency mode of the pruning and merging passes: per-group channel counts chosen for a measured latency target.

``PruneConfig(latency=0.5, calibration=images)`` asks for half the original's latency on ``config.backend``.
The schedule (:func:`~medexport.compression.pruning.schedule.run_schedule`) reaches it in ``steps`` steps, the
budget of step ``s`` being ``1 - (1 - latency) * s / steps`` of the original's time. :class:`LatencyPlanner`
first builds the latency table (:mod:`.latency_table`, layers timed alone, cached per machine) and fits it to
whole models: the original narrowed uniformly by 1/4, 1/2 and 3/4 and at ``MIXES`` seeded random mixes of
widths, all timed side by side with the original. Then, before each step, it

1. prices each candidate count of every prunable group of the *current* model (the config's rounding, at most
   ``max_ratio`` removed from the original width) from the fitted table, the other groups at their current
   widths (HALP's per-step linearisation), and snaps the candidates to the staircase (a count that buys less
   than ``STEP`` of the model's time over the next wider one is dropped),
2. values each candidate by the output distortion it causes alone (:mod:`.sensitivity`: the pass's own step
   applied to a copy, class-balanced KL against the current model on calibration images; measured at up to
   ``PROBES`` counts per group, interpolated between), so the pass's criterion still picks *which* channels go
   and the knapsack decides *how many* per group,
3. solves the multiple-choice knapsack (:func:`.knapsack.solve`: least summed distortion within the budget) and
   checks the answer with the table's joint model (a conv narrowed on both sides saves less than the two
   single savings summed); while that predicts over budget, the knapsack budget is tightened by the excess
   and solved again,
4. checks the additive model against the whole: the knapsack's widths, widths halfway to uniform and uniform
   widths (one removal ratio of every group's original width), each at the budget (:meth:`_toward_uniform`),
   are applied together and the one whose output is least distorted against the *original's* on the
   calibration images is taken. Summed single-group distortions can be far from the joint one deep in a
   network: on the trained ResNet-18 of ``benchmarks/torchpruning.py``, the first of two steps to 0.27x (budget
   0.635x), the knapsack's widths summed to 0.056 and measured 0.86 together, uniform widths 0.73; without
   this check the result (1.24 against the original, uniform half 0.92) also recovered worse by distillation.

Every narrowed model judged (the probes of 2 against the current model, the candidates of 4 and each step's
result against the original) first has its BatchNorm statistics settled (:meth:`LatencyPlanner.judge`):
re-estimated on the calibration images, kept only where that lowers the distortion judged.

After each step but the last the step's model is timed beside the original and added to the fit. After the
last the result is timed whole beside the original (median, interleaved); when it misses the target by more
than ``tolerance`` either way, up to ``schedule.CORRECTIONS`` more steps aim at the target scaled by predicted
over measured: from the result when it is too slow, from the model before the last step when it is too fast
(pruned channels cannot come back), and the slowest result within the tolerance is kept. Predicted and
measured latency, the table's build time, its fit and staircase go into the record.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

from medexport.compression.pruning.knapsack import snap, solve
from medexport.compression.pruning.sensitivity import Sensitivity

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from medexport.compression.pruning.config import PruneConfig
    from medexport.compression.pruning.dependency import DependencyGraph

STEP = 0.002  # of the model's time: a cheaper count that saves less than this is on the same stair
SOLVES = 6  # knapsack solves per step while the joint model predicts over budget
RATIOS = 33  # candidate removal ratios from 0 to max_ratio, rounded by the config
PROBES = 6  # candidate counts per group whose distortion is measured; the others are interpolated
UNIFORM = (0.25, 0.5, 0.75)  # removal ratios of the uniform models the table is fitted on
MIXES = 9  # random per-group mixes of removal ratios the table is also fitted on
TOWARD_UNIFORM = {"halfway": 0.5, "uniform": 1.0}  # candidates beside the knapsack's widths (share of uniform)
BISECTIONS = 24  # of the common removal ratio of a candidate toward uniform widths
TIMING_SECONDS = 2.0  # at least, per side-by-side timing: 15 rounds of a 2D U-Net take 0.3 s and repeat within 7%


class LatencyPlanner:
    """The latency table of ``model``'s prunable groups and the per-step choice of their widths.

    ``narrow(base, {group: channels}, graph)`` returns a copy of ``base`` with those groups narrowed by the pass
    (``graph``: ``base``'s analysis, or None to analyse it)."""

    def __init__(self, model: "nn.Module", input_shape: tuple[int, ...], config: "PruneConfig",
                 graph: "DependencyGraph", prunable: list[str],
                 narrow: "Callable[..., nn.Module]") -> None:
        from medexport.compression.pruning.latency_table import measure

        self.config, self.input_shape, self.narrow = config, tuple(input_shape), narrow
        groups = [g for g in graph.groups if g.name in prunable]
        self.warnings: list[str] = []
        self._check_idle()
        self.table = measure(model, self.input_shape, graph, groups, config.backend, config.threads)
        self.original = dict(self.table.channels)
        self.sensitivity = Sensitivity(config.calibration)
        self.reference = self.sensitivity.of(model)  # the candidates' joint distortion is against the original
        self.history: list[dict] = []
        self.batchnorm = {"adapted": 0, "stale": 0}  # statistics kept by :meth:`judge`, over all it settled
        rng = random.Random(0)
        mixes = [{n: rng.uniform(0.0, config.max_ratio) for n in self.original} for _ in range(MIXES)]
        plans = [dict.fromkeys(self.original, r) for r in UNIFORM] + mixes
        models = [narrow(model, {n: config.kept_channels(c, plan[n]) for n, c in self.original.items()}, graph)
                  for plan in plans]
        widths = [self._widths(m) for m in models]
        narrowed = [i for i, w in enumerate(widths) if w != self.original]
        timed = self._time(model, [models[i] for i in narrowed])
        self.table.fit([(widths[i], ratio) for i, ratio in zip(narrowed, timed)])

    def budget(self, step: int) -> float:
        """Step ``step``'s latency budget, a fraction of the original's time."""
        return 1 - (1 - self.config.latency) * step / self.config.steps

    def targets(self, model: "nn.Module", budget: float, locked: dict[str, str]) -> dict[str, int]:
        """``{group: channels to keep}`` for the groups that narrow, chosen for ``budget`` on ``model`` as it is."""
        graph = self._analyze(model)
        current = {g.name: g.channels for g in graph.groups if g.name in self.original}
        distortion = self.sensitivity.of(model)
        options = {name: self._options(model, graph, name, current, distortion)
                   for name in current if name not in locked}
        allowed = budget - self.table.predict(current)  # summed change of the groups' costs
        floor = sum(min(cost for _, cost, _ in o) for o in options.values() if o)
        choice = dict(current)
        for _ in range(SOLVES):
            choice = {**current, **solve(options, max(allowed, floor))}
            excess = self.table.predict(choice) - budget
            if excess <= 1e-9 or allowed <= floor:
                break  # within budget, or already the narrowest widths allowed (the record shows the miss)
            allowed -= excess
        value = sum(v for n, k in choice.items() if k < current[n] for c, _, v in options[n] if c == k)
        candidates = {"knapsack": choice, **{name: self._toward_uniform(graph, current, locked, choice, budget, share)
                                             for name, share in TOWARD_UNIFORM.items()}}
        narrowed = {name: {n: k for n, k in widths.items() if k < current[n]} for name, widths in candidates.items()}
        joint = {}
        for name, kept in narrowed.items():
            if kept not in [narrowed[m] for m in joint]:  # the same widths are measured once
                joint[name] = self.judge(self.narrow(model, kept, graph)) if kept else self.reference(model)
        chosen = min(joint, key=joint.get)
        kept = narrowed[chosen]
        self.history.append({"budget": round(budget, 4), "predicted": round(self.table.predict(candidates[chosen]), 4),
                             "distortion": round(-value, 5), "joint": {n: round(d, 5) for n, d in joint.items()},
                             "chose": chosen, "kept": kept})
        return kept

    def _toward_uniform(self, graph: "DependencyGraph", current: dict[str, int], locked: dict[str, str],
                        choice: dict[str, int], budget: float, share: float) -> dict[str, int]:
        """Widths whose removal ratio of each group's original width is ``share`` of one common ratio and the rest
        the knapsack ``choice``'s ratio (share 1: uniform), the common ratio the least that the table predicts
        within ``budget`` (bisected; ``max_ratio`` when none is). No group widens; locked groups keep theirs."""
        groups = {g.name: g for g in graph.groups if g.name in current}

        def widths(common: float) -> dict[str, int]:
            out = dict(current)
            for n in current:
                if n not in locked:
                    ratio = share * common + (1 - share) * (1 - choice[n] / self.original[n])
                    kept = self.config.kept_channels(self.original[n], min(ratio, self.config.max_ratio))
                    out[n] = min(current[n], self.config.snap_to_norms(groups[n], kept))
            return out

        low, high = 0.0, self.config.max_ratio
        if self.table.predict(widths(high)) > budget:
            return widths(high)
        for _ in range(BISECTIONS):
            mid = (low + high) / 2
            low, high = (low, mid) if self.table.predict(widths(mid)) <= budget else (mid, high)
        return widths(high)

    def _options(self, model: "nn.Module", graph: "DependencyGraph", name: str, current: dict[str, int],
                 distortion: "Callable[[nn.Module], float]") -> list:
        """(channels, cost change, minus distortion) per candidate count of group ``name``, snapped to the
        staircase; the distortion is measured at up to PROBES counts and interpolated between them."""
        now = current[name]
        now_predicted = self.table.predict(current)

        def cost(kept: int) -> float:
            return self.table.predict({**current, name: kept}) - now_predicted

        group = next(g for g in graph.groups if g.name == name)
        counts = {self.config.snap_to_norms(group, self.config.kept_channels(self.original[name], r))
                  for r in np.linspace(0.0, self.config.max_ratio, RATIOS)}
        priced = snap([(k, cost(k), 0.0) for k in sorted(c for c in counts | {now} if c <= now)],
                      STEP)
        widths = sorted(k for k, _, _ in priced)
        probes = sorted({widths[round(i)] for i in np.linspace(0, len(widths) - 1, min(PROBES, len(widths)))})
        measured = {k: (0.0 if k == now else self.judge(self.narrow(model, {name: k}, graph), distortion))
                    for k in probes}
        xs = sorted(measured)
        return [(k, c, -float(np.interp(k, xs, [measured[x] for x in xs]))) for k, c, _ in priced]

    def judge(self, model: "nn.Module", distortion: "Callable[[nn.Module], float] | None" = None) -> float:
        """``distortion`` (default: against the original) of ``model`` (narrowed, changed in place) once its
        BatchNorm statistics are settled: re-estimated on the calibration images where that lowers it, the ones
        it had otherwise (:func:`.batchnorm.adapt_if_closer`; left as they are with ``adapt_bn`` off). Counted
        in the record."""
        from medexport.compression.pruning.batchnorm import adapt_if_closer

        distortion = distortion or self.reference
        if not self.config.adapt_bn:
            return distortion(model)
        value, kept = adapt_if_closer(model, self.config.calibration, distortion)
        if kept is not None:
            self.batchnorm["adapted" if kept else "stale"] += 1
        return value

    def settle(self, model: "nn.Module") -> "nn.Module":
        """``model`` (a step's result, changed in place) with its BatchNorm statistics settled as in :meth:`judge`."""
        self.judge(model)
        return model

    def observe(self, original: "nn.Module", model: "nn.Module") -> float:
        """Time ``model`` beside ``original`` and add it to the table's fit (after each step but the last: the next
        step's budget is then priced from what this one measured as well)."""
        measured, widths = self._measure(original, model)
        self.table.fit([(widths, measured)])
        return measured

    def _analyze(self, model: "nn.Module") -> "DependencyGraph":
        from medexport.compression.pruning.dependency import analyze
        from medexport.graph import capture

        return analyze(capture(model, self.input_shape), model, self.config.group_norm)

    def _widths(self, model: "nn.Module") -> dict[str, int]:
        return {g.name: g.channels for g in self._analyze(model).groups if g.name in self.original}

    def predict(self, model: "nn.Module") -> float:
        """The table's latency ratio for ``model`` (a pruned copy of the original)."""
        return self.table.predict(self._widths(model))

    def _check_idle(self) -> None:
        """Note when other processes keep the CPU busy: on a shared 2-core machine a 1-thread timing then swings
        by a third (the 2D reference U-Net pruned uniformly by 3/8 measured 0.59 quiet, 0.80 beside two busy
        jobs), and the table's fit and the corrections follow whatever was measured."""
        from medexport.bench import busy_warning

        warning = busy_warning()
        if warning and warning not in self.warnings:
            self.warnings.append(warning)

    def measure(self, original: "nn.Module", model: "nn.Module") -> float:
        """``model``'s median latency over ``original``'s, timed side by side on the backend (kept in the history)."""
        return self._measure(original, model)[0]

    def _measure(self, original: "nn.Module", model: "nn.Module") -> tuple[float, dict[str, int]]:
        """:meth:`measure`, and ``model``'s group widths (analysed once for the prediction and the fit)."""
        self._check_idle()
        widths = self._widths(model)
        predicted = self.table.predict(widths)
        ratio = self._time(original, [model])[0]
        self.history.append({"measured": round(ratio, 4), "predicted": round(predicted, 4)})
        return ratio, widths

    def _time(self, original: "nn.Module", models: list["nn.Module"]) -> list[float]:
        """Each of ``models``' median latency over ``original``'s, all compiled together and timed interleaved."""
        from medexport.compression._latency import compare

        before, *after = compare([original, *models], self.input_shape, self.config.backend,
                                 threads=self.config.threads, rounds=15, min_seconds=TIMING_SECONDS)
        return [ms / before for ms in after]

    def record(self, predicted: float, measured: float) -> dict:
        return {"target": self.config.latency, "backend": self.config.backend, "threads": self.config.threads,
                "predicted": round(predicted, 4), "measured": round(measured, 4),
                "table_seconds": round(self.table.seconds, 2), "layers_measured": self.table.measured,
                "fit": {"models": len(self.table.points), "outliers": self.table.outliers,
                        "coefficients": [round(c, 4) for c in self.table.coefficients or ()]},
                "steps": self.history, "batchnorm": self.batchnorm, "staircase": self.table.staircase(),
                "warnings": self.warnings}
