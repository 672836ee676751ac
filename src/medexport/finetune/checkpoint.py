"""Resumable fine-tuning: the whole training state in one file, written atomically, read without pickles.

A checkpoint holds the weights, the optimizer and schedule, both random generators, the step reached, the
early-stopping state and the losses so far, so a run resumed from it draws the same batches and ends with the
same weights as one never interrupted. ``fingerprint`` names the run it belongs to (recipe, images and the
starting weights); a checkpoint of another run is refused rather than continued. Example::

    save_checkpoint(path, {"fingerprint": fp, "step": 120, ...})
    state = load_checkpoint(path, fp)   # None when there is none yet
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medexport._io import atomic_path
from medexport.errors import DataError

if TYPE_CHECKING:
    from torch import nn


def fingerprint(recipe: dict[str, Any], model: "nn.Module", *arrays: np.ndarray) -> str:
    """sha256 of the recipe, the starting weights and the images: what a resumed run must share with the first."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, expected: str) -> dict[str, Any] | None:
    """The state saved at ``path`` (``weights_only``: no pickled code), None if there is none; a checkpoint that
    cannot be read, or that another run wrote (its fingerprint is not ``expected``), is a DataError."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        raise DataError(f"fine-tuning checkpoint {path.name} cannot be read ({type(exc).__name__}); delete it "
                        "or run without --resume") from None
    if not isinstance(state, dict) or state.get("fingerprint") != expected:
        raise DataError(f"fine-tuning checkpoint {path.name} belongs to another run (other options, images or "
                        "starting weights): run without --resume to start over")
    return state


def rng_state(rng: np.random.Generator) -> str:
    """A numpy generator's state as JSON (its integers exceed what a checkpoint stores as numbers)."""
    return json.dumps(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: str) -> None:
    rng.bit_generator.state = json.loads(state)
