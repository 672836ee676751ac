"""How much a pruning pass removes and where, as one validated dataclass. Example::

    PruneConfig(ratio=0.5)                                  # half the channels of every prunable group
    PruneConfig(ratio=0.3, round_to=16, exclude=("encoder.0*",))
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from medexport.errors import InputError


@dataclass(frozen=True)
class PruneConfig:
    """Uniform ratio, rounding and exclusions for one pruning pass.

    ``ratio`` of the channels of every prunable group is removed. Kept counts are rounded to
    multiples of ``round_to`` in groups of at least ``round_min_channels`` channels (smaller ones keep
    ``round(channels * (1 - ratio))``, at least one). ``exclude`` are shell globs on qualified module
    names: a group touching a matching layer is left whole.
    """

    ratio: float = 0.5
    round_to: int = 8
    round_min_channels: int = 16
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise InputError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.round_to < 1:
            raise InputError(f"round_to must be >= 1, got {self.round_to}")
        if self.round_min_channels < 1:
            raise InputError(f"round_min_channels must be >= 1, got {self.round_min_channels}")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def kept_channels(self, channels: int) -> int:
        """Channels a group of ``channels`` keeps: rounded to ``round_to`` when large enough, never zero."""
        target = channels * (1.0 - self.ratio)
        if channels >= self.round_min_channels and self.round_to > 1:
            return min(channels, max(self.round_to, int(target / self.round_to + 0.5) * self.round_to))
        return min(channels, max(1, int(target + 0.5)))

    def to_dict(self) -> dict:
        """Plain JSON-able form, for the manifest's compression recipe."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
