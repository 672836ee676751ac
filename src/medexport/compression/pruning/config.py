"""How much a pruning pass removes and where, as one validated dataclass. Example::

    PruneConfig(ratio=0.5)                                  # half the channels of every prunable group
    PruneConfig(ratio=0.3, round_to=16, exclude=("encoder.0*",))
    PruneConfig(ratio=0.5, scope="global", max_ratio=0.75, steps=4,          # capped non-uniform, iterative,
                calibration=images, heldout=data, rails=GuardRails())  # guard-railed with rollback
    PruneConfig(ratio=0.5, steps=4, recover=lambda m: distill(m, original, images, DistillConfig(75))[0])
                                                            # prune, fine-tune, (validate,) prune again ...
    PruneConfig(latency=0.5, backend="openvino", steps=4)   # half the measured latency, widths by knapsack
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from medexport.errors import InputError

GROUP_NORM = ("groups", "channels")


@dataclass(frozen=True)
class PruneConfig:
    """Uniform ratio, rounding and exclusions for one pruning pass.

    ``ratio`` of the channels of every prunable group is removed (``scope="layer"``), or of all prunable
    channels together, lowest globally normalised scores first, no group losing more than ``max_ratio``
    (``scope="global"``). Kept counts are rounded to multiples of ``round_to`` in groups of at least
    ``round_min_channels`` channels (smaller ones keep ``round(channels * (1 - ratio))``). No layer of a pruned
    group keeps fewer than ``min_channels`` outputs (default 4; a layer narrower than that is not narrowed), nor
    zero: a group that joins several producers (a U-Net concat summed back onto itself, as in VNet) is pruned
    as a whole, and one producer could otherwise lose every channel it has.
    ``exclude`` are shell globs on qualified module names: a group touching a matching layer is left whole.
    With ``heldout`` (and ``rails``), every step is validated and a step that breaks a guard rail is rolled
    back and its group locked. ``recover``, when given, takes each step's pruned model and returns it
    recovered (e.g. fine-tuned by distillation) before it is validated and before the next step scores it:
    the classic prune / fine-tune loop. ``calibration``, ``heldout``, ``rails`` and ``recover`` are data, not
    recipe: they are left out of :meth:`to_dict`.
    ``latency`` (instead of ``ratio``) asks for that fraction of the original's latency measured on ``backend``
    with ``threads``: per-group widths come from a latency table and a knapsack, checked against uniform widths by
    the output they keep together (:mod:`.latency_mode`), no group losing more than ``max_ratio``; ``tolerance``
    is the relative miss of the measured result, either way, that triggers a correction step. It needs
    ``calibration`` images: each width is judged by what it changes in the output (:mod:`.sensitivity`), and with
    ``adapt_bn`` every narrowed copy it judges and every step's result has its BatchNorm statistics re-estimated
    on them first, kept where that brings the output closer to the original's (:mod:`.batchnorm`; the ratio mode
    leaves statistics as they are).
    ``group_norm``: how a GroupNorm loses channels. ``"channels"`` (default): single channels, the norm keeping its
    number of groups (kept counts are multiples of it) and every group's statistics changing, as Torch-Pruning
    does; ``"groups"``: whole norm groups, so the kept ones compute exactly as before, but all channels of a norm
    group go or stay together. On MONAI's SegResNet trained here (``benchmarks/torchpruning.py``; norm groups of
    2 to 16 channels), half the channels, one-shot, kept a worst-class Dice against the original of 0.31 / 0.35 /
    0.55 (prune-l2 / l1 / bn) with ``"channels"`` and 0.00 / 0.00 / 0.00 with ``"groups"``.
    """

    ratio: float = 0.5
    round_to: int = 8
    round_min_channels: int = 16
    min_channels: int = 4  # no pruned layer keeps fewer output channels (a narrower one is kept as it is)
    exclude: tuple[str, ...] = ()
    scope: str = "layer"  # "layer": every group loses ``ratio``; "global": per-group ratios from one global ranking
    max_ratio: float = 0.75  # global scope: no group loses more than this share (the pathology paper's cap)
    steps: int = 1  # iterative: reach ``ratio`` in this many steps, re-scoring (and re-checking) after each
    rollback: bool = False  # the recipe's word for it: a run binds ``heldout`` (and ``rails``) to a pass with rollback,
    # and ``heldout`` is what makes the schedule validate its steps (given it, rollback is set)
    calibration: Any = field(default=None, repr=False, compare=False)  # images for activation scores / merging
    heldout: Any = field(default=None, repr=False, compare=False)  # LabelledData: validate each step (rollback)
    rails: Any = field(default=None, repr=False, compare=False)  # GuardRails used with ``heldout``
    latency: float | None = None  # target latency / the original's on ``backend`` (replaces ``ratio``)
    backend: str = "openvino"
    threads: int | None = None
    tolerance: float = 0.05
    recover: Callable[[Any], Any] | None = field(default=None, repr=False, compare=False)  # after each step
    group_norm: str = "channels"  # GroupNorm: "channels" removes single channels, "groups" whole norm groups (exact)
    adapt_bn: bool = True  # latency mode: BatchNorm statistics re-estimated after narrowing, kept where closer

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise InputError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.round_to < 1:
            raise InputError(f"round_to must be >= 1, got {self.round_to}")
        if self.round_min_channels < 1:
            raise InputError(f"round_min_channels must be >= 1, got {self.round_min_channels}")
        if self.min_channels < 1:
            raise InputError(f"min_channels must be >= 1, got {self.min_channels}")
        if self.group_norm not in GROUP_NORM:
            raise InputError(f"group_norm must be one of {', '.join(GROUP_NORM)}, got {self.group_norm!r}")
        if self.scope not in ("layer", "global"):
            raise InputError(f"scope must be 'layer' or 'global', got {self.scope!r}")
        if not 0.0 < self.max_ratio < 1.0:
            raise InputError(f"max_ratio must be in (0, 1), got {self.max_ratio}")
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if self.latency is not None:
            from medexport.runtimes import timed_backends

            if not 0.0 < self.latency <= 1.0:
                raise InputError(f"latency must be a fraction of the original latency in (0, 1], got {self.latency}")
            if self.backend not in timed_backends():
                raise InputError(f"latency is measured on {' or '.join(timed_backends())}, not {self.backend!r}")
            if not 0.0 < self.tolerance < 1.0:
                raise InputError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.heldout is not None:
            object.__setattr__(self, "rollback", True)
        if self.heldout is not None and self.rails is None:
            from medexport.evaluation import GuardRails

            object.__setattr__(self, "rails", GuardRails())
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def kept_channels(self, channels: int, ratio: float | None = None) -> int:
        """Channels a group of ``channels`` keeps at ``ratio`` (default: the config's), rounded, at least
        ``min_channels`` (or all of them when there are fewer)."""
        target = channels * (1.0 - (self.ratio if ratio is None else ratio))
        if channels >= self.round_min_channels and self.round_to > 1:
            kept = max(self.round_to, int(target / self.round_to + 0.5) * self.round_to)
        else:
            kept = int(target + 0.5)
        return min(channels, max(self.min_channels, kept))

    def snap_to_norms(self, group: Any, kept: int) -> int:
        """``kept`` channels of ``group`` (a dependency group) rounded to a multiple of the number of groups of every
        GroupNorm in it when single channels go (``group_norm="channels"``: each norm keeps its groups, as many
        channels in each), and at least one multiple; unchanged otherwise."""
        import math

        from torch import nn

        counts = [m.module.num_groups for m in group.members if isinstance(m.module, nn.GroupNorm)]
        if self.group_norm != "channels" or not counts:
            return kept
        step = math.lcm(*counts)
        return max(step, round(kept / step) * step)

    def to_dict(self) -> dict:
        """Plain JSON-able form, for the manifest's compression recipe."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}
        out["exclude"] = list(self.exclude)
        if self.latency is None:
            for name in ("latency", "backend", "threads", "tolerance", "adapt_bn"):
                out.pop(name)
        else:
            out.pop("ratio")
        if self.rails is not None:
            out["guard_rails"] = self.rails.to_dict()
        return out
