"""How a low-rank pass picks ranks and which layers it may touch, as one validated dataclass.

Exactly one rank rule is given: ``rank_ratio`` (keep this fraction of each layer's full rank),
``energy`` (keep the smallest rank holding this fraction of the squared singular values), ``vbmf``
(the rank analytic EVBMF finds in each unfolding), ``budget`` (divide the whole model's MACs, or with
``budget_metric="params"`` its weights, by this factor; the allocator picks per-layer ranks), or ``latency`` (bring the latency measured on
``backend`` to this fraction of the original's). Example::

    LowRankConfig(budget=3.0)                       # total MACs / 3
    LowRankConfig(budget=3.0, budget_metric="params")  # total weights / 3
    LowRankConfig(energy=0.9, exclude=("*.head*",))  # per-layer 90 % energy
    LowRankConfig(latency=0.5, backend="openvino", calibration=images)
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from medexport.errors import InputError
from medexport.runtimes import timed_backends

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class LowRankConfig:
    """Rank rule, exclusions and rounding for one low-rank pass.

    ``exclude`` are shell globs on qualified module names; ``exclude_types`` are class names
    (``"Linear"``, ``"ConvTranspose3d"``). ``keep_first``/``keep_head`` exclude the first layer that
    reads the input and the last one that produces the output. ``round_to`` rounds ranks to
    multiples the hardware likes on layers whose full rank is at least ``4 * round_to``.
    ``only_if_smaller`` never factorizes a layer whose factorized MACs are not smaller (turn it off
    only to check the rewiring at full rank; a budget, on MACs or weights, never offers such ranks). ``tolerance`` is the allowed relative miss of a budget.
    ``calibration`` holds real images (N, C, *spatial) for data-aware passes (hsc) and for the latency
    allocator's sensitivities; it is not part of the recipe (``to_dict`` gives the count the pass reads).
    ``threads`` are the backend's inference threads while it measures (None: its default).
    ``payoff``: the least realized / ideal speed-up (latency before / after over MACs before / after, the
    whole model, measured on ``backend``) the latency allocator accepts.
    """

    rank_ratio: float | None = None
    energy: float | None = None
    budget: float | None = None
    budget_metric: str = "macs"  # what ``budget`` divides: "macs" or "params"
    vbmf: bool = False
    latency: float | None = None
    backend: str = "openvino"
    threads: int | None = None
    payoff: float = 0.85
    exclude: tuple[str, ...] = ()
    exclude_types: tuple[str, ...] = ()
    keep_first: bool = True
    keep_head: bool = True
    round_to: int = 8
    only_if_smaller: bool = True
    tolerance: float = 0.05
    calibration: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        rules = [r for r in (self.rank_ratio, self.energy, self.budget, self.latency, self.vbmf or None)
                 if r is not None]
        if len(rules) != 1:
            raise InputError("give exactly one of rank_ratio, energy, vbmf, budget or latency")
        if self.latency is not None and not 0.0 < self.latency < 1.0:
            raise InputError(f"latency must be a fraction of the original latency in (0, 1), got {self.latency}")
        if self.backend not in timed_backends():
            raise InputError(f"latency is measured on {' or '.join(timed_backends())}, not {self.backend!r}")
        if not 0.0 <= self.payoff <= 1.0:
            raise InputError(f"payoff must be in [0, 1], got {self.payoff}")
        if self.rank_ratio is not None and not 0.0 < self.rank_ratio <= 1.0:
            raise InputError(f"rank_ratio must be in (0, 1], got {self.rank_ratio}")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise InputError(f"energy must be in (0, 1], got {self.energy}")
        if self.budget is not None and not self.budget > 1.0:
            raise InputError(f"budget must be a reduction factor above 1 (e.g. 3 for 3x), got {self.budget}")
        if self.budget_metric not in BUDGET_METRICS:
            raise InputError(f"budget_metric must be one of {', '.join(BUDGET_METRICS)}, got {self.budget_metric!r}")
        if self.round_to < 1:
            raise InputError(f"round_to must be >= 1, got {self.round_to}")
        if not 0.0 < self.tolerance < 1.0:
            raise InputError(f"tolerance must be in (0, 1), got {self.tolerance}")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "exclude_types", tuple(self.exclude_types))

    def to_dict(self) -> dict:
        """Plain JSON-able form, for the manifest's compression recipe: the rule in use (with the latency rule's
        backend, threads and payoff only when it is the latency rule), and the calibration images actually read."""
        unused = {"calibration"} | {name for name in RULES if not getattr(self, name)}
        if self.latency is None:
            unused |= {"backend", "threads", "payoff"}
        if self.budget is None:
            unused.add("budget_metric")
        items = ((f.name, getattr(self, f.name)) for f in fields(self) if f.name not in unused)
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in items}
        plain["calibration_images"] = self.images_used()
        return plain

    def images_used(self) -> int | None:
        """How many of ``calibration`` the pass reads: the latency allocator's damage sample (None: none)."""
        if self.calibration is None or self.latency is None:
            return None
        return len(damage_images(self.calibration))


def damage_images(images: np.ndarray) -> np.ndarray:
    """The calibration images the latency allocator's damage estimate runs on: 8 2D images, or 2 3D volumes
    (one forward pass each per candidate). It lives here so that :meth:`LowRankConfig.images_used` can record the count."""
    return images[:8 if images.ndim == 4 else 2]


RULES = ("budget", "latency", "rank_ratio", "energy", "vbmf")  # the rank rules: exactly one is set
BUDGET_METRICS = ("macs", "params")


def parse_budget(text: str | float) -> float:
    """``"3x"``, ``"3"`` or ``3.0`` -> 3.0 (a reduction factor above 1)."""
    raw = str(text).strip().lower().removesuffix("x")
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"budget must look like '3x', got {text!r}") from None
    if not value > 1.0:
        raise InputError(f"budget must be above 1x, got {text!r}")
    return value
