"""What a pass did, layer by layer (a factorized layer or a pruned group), as the manifest and the CLI print it."""
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
class GroupRecord:
    """One pruned group: its layers, channels kept/removed, and MACs of its layers before/after the pass."""

    name: str
    method: str
    members: tuple[str, ...]
    channels: int
    kept: int
    removed: int
    macs_before: int
    macs_after: int
    note: str = ""  # e.g. "3 steps; locked by guard rails at step 4"


@dataclass
class PassRecord:
    """A pass's result: its config, the layers it replaced, the ones it left (with why), model MACs and weights."""

    method: str
    config: dict
    macs_before: int
    macs_after: int
    layers: list[LayerRecord | GroupRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)  # guard-railed searches: every validated step and its verdict
    latency: dict = field(default_factory=dict)  # latency mode: target, predicted and measured ratio, staircase
    params_before: int = 0  # every parameter of the model (set by CompressionPass.apply)
    params_after: int = 0

    @property
    def ratio(self) -> float:
        """Achieved MACs reduction factor of the whole model (3.0 means three times fewer MACs)."""
        return self.macs_before / max(self.macs_after, 1)

    @property
    def params_ratio(self) -> float:
        """Achieved reduction factor of the model's parameter count."""
        return self.params_before / max(self.params_after, 1)

    def to_dict(self) -> dict:
        return {"method": self.method, "config": self.config, "macs_before": self.macs_before,
                "macs_after": self.macs_after, "ratio": round(self.ratio, 4), "params_before": self.params_before,
                "params_after": self.params_after, "params_ratio": round(self.params_ratio, 4),
                "layers": [asdict(layer) for layer in self.layers], "skipped": dict(self.skipped), "log": list(self.log),
                **({"latency": self.latency} if self.latency else {})}


def chain_summary(records: list[PassRecord]) -> dict:
    """One record of passes run in a chain: the first pass's before, the last one's after, every layer (each
    names its method), ``config`` and ``skipped`` keyed by method, and each pass's own record under ``passes``.
    A single pass gives its own record (``config`` is that pass's, no ``passes``): read a chain's per-pass
    settings from ``passes``."""
    if len(records) == 1:
        return records[0].to_dict()
    first, last = records[0], records[-1]
    passes = [r.to_dict() for r in records]
    return {"method": ",".join(r.method for r in records), "config": {r.method: r.config for r in records},
            "macs_before": first.macs_before, "macs_after": last.macs_after,
            "ratio": round(first.macs_before / max(last.macs_after, 1), 4), "params_before": first.params_before,
            "params_after": last.params_after, "params_ratio": round(first.params_before / max(last.params_after, 1), 4),
            "layers": [layer for p in passes for layer in p["layers"]],
            "skipped": {f"{p['method']}: {name}": why for p in passes for name, why in p["skipped"].items()},
            "log": [{"pass": p["method"], **entry} for p in passes for entry in p["log"]], "passes": passes}
