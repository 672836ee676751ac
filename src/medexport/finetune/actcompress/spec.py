"""What to compress: the transform, the ratio lambda, the blocks and the layer types (``--act-compress dct
--act-ratio 10 --act-layers block0-1 --act-types conv,bn,relu``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medexport.errors import InputError
from medexport.finetune.actcompress._select import LAYER_TYPES, parse_blocks, parse_types
from medexport.finetune.actcompress._transforms import TRANSFORMS


@dataclass(frozen=True)
class ActCompressSpec:
    """Layers of ``types`` in the conv blocks ``blocks`` (numbered by resolution level, 0 = largest feature maps)
    save their activations for the backward pass as ``method`` coefficients, top-k at ratio ``ratio`` (k = N/ratio).

    >>> ActCompressSpec.from_flags("dct", 10, "block0-1", "conv,bn,relu").label
    'dct lambda=10 on bn,conv,relu in block0-1'
    """

    method: str = "dct"
    ratio: float = 10.0
    blocks: tuple[int, ...] = (0, 1)
    types: tuple[str, ...] = ("bn", "conv", "relu")

    def __post_init__(self) -> None:
        if self.method not in TRANSFORMS:
            raise InputError(f"--act-compress takes one of {', '.join(TRANSFORMS)}; got {self.method!r}")
        if not self.ratio >= 1:
            raise InputError(f"--act-ratio is a compression ratio lambda >= 1 (1: keep everything); got {self.ratio}")
        if not self.blocks or min(self.blocks) < 0:
            raise InputError(f"--act-layers needs at least one block >= 0; got {self.blocks}")
        unknown = set(self.types) - set(LAYER_TYPES)
        if unknown or not self.types:
            raise InputError(f"--act-types takes a subset of {', '.join(LAYER_TYPES)}; got {', '.join(self.types)}")
        object.__setattr__(self, "blocks", tuple(sorted(set(self.blocks))))
        object.__setattr__(self, "types", tuple(sorted(set(self.types))))

    @classmethod
    def from_flags(cls, method: str, ratio: float, layers: str, types: str) -> "ActCompressSpec":
        return cls(method, float(ratio), parse_blocks(layers), parse_types(types))

    @property
    def layers(self) -> str:
        """The blocks as the paper writes them: block0, block0-1, block0,block2."""
        b = self.blocks
        if b == tuple(range(b[0], b[-1] + 1)):
            return f"block{b[0]}" if len(b) == 1 else f"block{b[0]}-{b[-1]}"
        return ",".join(f"block{i}" for i in b)

    @property
    def label(self) -> str:
        return f"{self.method} lambda={self.ratio:g} on {','.join(self.types)} in {self.layers}"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "ratio": self.ratio, "layers": self.layers, "types": list(self.types)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ActCompressSpec":
        return cls(data["method"], float(data["ratio"]), parse_blocks(data["layers"]), tuple(data["types"]))
