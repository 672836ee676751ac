"""How raw medical images become model inputs: one validated dataclass a manifest can store.

Example::

    spec = PreprocessSpec(spatial_size=(224, 224), channels=3, intensity="window", window=(40, 400))
    PreprocessSpec.from_dict(spec.to_dict()) == spec
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from medexport.errors import InputError

INTENSITY_MODES = ("percentile", "window", "minmax", "none")
FIT_MODES = ("resize", "pad_crop")
_AXCODE_PAIRS = ({"L", "R"}, {"A", "P"}, {"S", "I"})


@dataclass(frozen=True)
class PreprocessSpec:
    """Geometry and intensity recipe applied identically at calibration and validation time.

    ``spatial_size`` of length 2 means a 2D model (volumes are cut into slices along ``slice_axis``
    of the (z, y, x)-ordered array, after ``orientation``); length 3 means a 3D model.
    ``window`` is (center, width) in the image's units (Hounsfield for CT).
    """

    spatial_size: tuple[int, ...]
    channels: int = 1
    orientation: str | None = None
    spacing: tuple[float, ...] | None = None
    intensity: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    window: tuple[float, float] | None = None
    fit: str = "resize"
    slice_axis: int = 0
    max_slices_per_volume: int | None = None

    def __post_init__(self) -> None:
        # Normalise lists (from JSON/YAML) to tuples so specs compare and hash.
        for name in ("spatial_size", "spacing", "percentiles", "window"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        size = self.spatial_size
        if len(size) not in (2, 3) or any(int(s) != s or s < 1 for s in size):
            raise InputError(f"PreprocessSpec.spatial_size must be 2 or 3 positive ints, got {size}")
        if self.channels < 1:
            raise InputError(f"PreprocessSpec.channels must be >= 1, got {self.channels}")
        if self.orientation is not None:
            codes = self.orientation.upper()
            if len(codes) != 3 or any(not (set(codes) & pair) or len(set(codes) & pair) > 1
                                       for pair in _AXCODE_PAIRS):
                raise InputError(f"PreprocessSpec.orientation must be 3 axis codes like 'RAS' or 'LPS', "
                                 f"got {self.orientation!r}")
            object.__setattr__(self, "orientation", codes)
        if self.spacing is not None and (len(self.spacing) != len(size) or min(self.spacing) <= 0):
            raise InputError(f"PreprocessSpec.spacing must hold {len(size)} positive mm values to match "
                             f"spatial_size {size}, got {self.spacing}")
        if self.intensity not in INTENSITY_MODES:
            raise InputError(f"PreprocessSpec.intensity must be one of {INTENSITY_MODES}, got {self.intensity!r}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise InputError(f"PreprocessSpec.percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.intensity == "window":
            if self.window is None or len(self.window) != 2 or self.window[1] <= 0:
                raise InputError(f"PreprocessSpec.intensity='window' needs window=(center, width>0), got {self.window}")
        if self.fit not in FIT_MODES:
            raise InputError(f"PreprocessSpec.fit must be one of {FIT_MODES}, got {self.fit!r}")
        if self.slice_axis not in (0, 1, 2):
            raise InputError(f"PreprocessSpec.slice_axis must be 0, 1 or 2, got {self.slice_axis}")
        if self.max_slices_per_volume is not None and self.max_slices_per_volume < 1:
            raise InputError(f"PreprocessSpec.max_slices_per_volume must be >= 1, got {self.max_slices_per_volume}")

    @property
    def ndim(self) -> int:
        """Spatial dimensions of the model input (2 or 3)."""
        return len(self.spatial_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists) for the manifest."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        """Rebuild a spec from :meth:`to_dict` output; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"PreprocessSpec.from_dict got unknown keys {unknown}")
        return cls(**data)
