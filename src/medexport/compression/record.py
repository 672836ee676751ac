"""What a pass did, layer by layer, in a form the manifest and the CLI print directly."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LayerRecord:
    """One factorized layer: its ranks, its MACs before/after and the weight's relative reconstruction error."""

    name: str
    method: str
    kind: str
    ranks: tuple[int, ...]
    macs_before: int
    macs_after: int
    weight_error: float  # ||W - W_hat||_F / ||W||_F


@dataclass
class PassRecord:
    """A pass's result: its config, the layers it replaced, the ones it left (with why), and model MACs."""

    method: str
    config: dict
    macs_before: int
    macs_after: int
    layers: list[LayerRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)  # guard-railed searches: every validated step and its verdict

    @property
    def ratio(self) -> float:
        """Achieved MACs reduction factor of the whole model (3.0 means three times fewer MACs)."""
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict:
        return {"method": self.method, "config": self.config, "macs_before": self.macs_before,
                "macs_after": self.macs_after, "ratio": round(self.ratio, 4),
                "layers": [asdict(layer) for layer in self.layers], "skipped": dict(self.skipped), "log": list(self.log)}
