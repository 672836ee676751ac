"""The reference-model registry: names -> trained models with their weights, data and cards.

A :class:`ReferenceModel` only names files and an importable factory, so registering one costs
nothing; torch is imported when a model is built. Example::

    from medexport.zoo import get_model
    ref = get_model("brain-tissue-unet2d")
    model = ref.build()                  # weights loaded, eval mode
    images, labels = ref.heldout()       # bundled held-out images, ready for the model
"""
from __future__ import annotations

import fnmatch
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medexport.errors import InputError, ModelLoadError

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "brain-tissue-unet2d"

_ROOT = Path(__file__).resolve().parent
WEIGHTS_DIR = _ROOT / "weights"
DATA_DIR = _ROOT / "data"
CARDS_DIR = _ROOT / "cards"

_REGISTRY: dict[str, "ReferenceModel"] = {}
_TASKS = ("segmentation", "classification")


@dataclass(frozen=True)
class ReferenceModel:
    """A trained reference network: how to build it, where its weights, data and card live.

    ``factory`` is ``"module:function"``, a no-argument callable returning the untrained module.
    ``weights`` and ``card`` are file names inside ``zoo/weights`` and ``zoo/cards``; the bundled
    data is ``zoo/data/<name>.npz`` with uint8 ``images``/``labels``/``calibration`` arrays
    (images are intensities in [0, 1] stored as round(255 * x)).
    """

    name: str
    task: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    factory: str
    weights: str
    card: str
    spacing: tuple[float, ...] | None = None
    roi_size: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in _TASKS:
            raise InputError(f"model {self.name!r}: task must be one of {_TASKS}, got {self.task!r}")
        if len(self.input_shape) not in (4, 5) or self.input_shape[0] != 1:
            raise InputError(f"model {self.name!r}: input_shape must be (1, C, *spatial) with 2 or 3 "
                             f"spatial dims, got {self.input_shape}")
        if self.task == "segmentation" and self.classes[:1] != ("background",):
            raise InputError(f"model {self.name!r}: segmentation classes must start with 'background'")
        if ":" not in self.factory:
            raise InputError(f"model {self.name!r}: factory must be 'module:function', got {self.factory!r}")

    def weights_path(self) -> Path:
        """Absolute path of the shipped state_dict."""
        return WEIGHTS_DIR / self.weights

    def card_path(self) -> Path:
        """Absolute path of the markdown model card."""
        return CARDS_DIR / self.card

    def data_path(self) -> Path:
        """Absolute path of the bundled held-out and calibration data."""
        return DATA_DIR / f"{self.name}.npz"

    def create(self) -> "torch.nn.Module":
        """The untrained network from ``factory``."""
        module_name, _, attr = self.factory.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelLoadError(f"model {self.name!r}: cannot import factory {self.factory!r}: "
                                 f"{exc}") from None
        return fn()

    def build(self) -> "torch.nn.Module":
        """The trained network: factory + shipped weights (loaded with ``weights_only=True``), eval mode."""
        import torch

        path = self.weights_path()
        if not path.is_file():
            raise ModelLoadError(f"model {self.name!r}: weights file missing: {path}")
        model = self.create()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # torch raises several unrelated types for bad checkpoints
            raise ModelLoadError(f"model {self.name!r}: cannot load weights {path}: {exc}") from None
        return model.eval()

    def heldout(self) -> tuple[np.ndarray, np.ndarray]:
        """Held-out float32 images (N, C, *sp) ready for the model, and int64 labels ((N,) or (N, *sp))."""
        data = self._npz()
        return _to_float(data["images"]), data["labels"].astype(np.int64)

    def calibration(self) -> np.ndarray:
        """Float32 images from the training side (never the held-out region), for INT8 calibration."""
        return _to_float(self._npz()["calibration"])

    def card_metrics(self) -> dict[str, Any]:
        """The held-out ``MetricReport.to_dict()`` recorded with the card (``cards/<name>.json``)."""
        path = CARDS_DIR / f"{self.name}.json"
        if not path.is_file():
            raise ModelLoadError(f"model {self.name!r}: card metrics missing: {path}")
        return json.loads(path.read_text())

    def _npz(self) -> dict[str, np.ndarray]:
        path = self.data_path()
        if not path.is_file():
            raise ModelLoadError(f"model {self.name!r}: bundled data missing: {path}")
        with np.load(path) as data:
            return {k: data[k] for k in data.files}


def _to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(255.0)


def register_model(model: ReferenceModel) -> ReferenceModel:
    """Add ``model`` to the registry (a second model under the same name is an error)."""
    if model.name in _REGISTRY and _REGISTRY[model.name] != model:
        raise InputError(f"a different reference model is already registered as {model.name!r}")
    _REGISTRY[model.name] = model
    return model


def get_model(name: str) -> ReferenceModel:
    """The registered model called ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise InputError(f"unknown reference model {name!r}; known models: {known}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching the shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))
