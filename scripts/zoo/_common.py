"""Shared pieces of the reference-model training scripts (training-time only: needs nilearn/mricron).

Each ``train_<name>.py`` prepares its data, trains, then writes the weights (:func:`save_weights`),
the bundled npz (:func:`save_data`) and the card (:func:`write_card`: markdown + metrics JSON
measured on the held-out data with ``medexport.evaluation.evaluate``). ``--card-only`` skips
training and re-measures the card from the shipped weights and data.
"""
from __future__ import annotations

import argparse
import io
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from medexport._io import atomic_path, write_json, write_text  # noqa: E402
from medexport.zoo import ReferenceModel  # noqa: E402

MRICRON = Path("/usr/share/mricron/templates")
SEED = 0
EVAL_BATCH = 64   # images (or sliding windows) per forward pass when measuring the card


def parse_args(doc: str) -> argparse.Namespace:
    """``--card-only``: re-measure and rewrite the card from the shipped weights and data."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--card-only", action="store_true",
                        help="skip training; re-evaluate the shipped weights and rewrite the card")
    return parser.parse_args()


def setup_torch() -> None:
    """Two threads (the build machine is a shared 2-core box) and fixed seeds."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    np.random.seed(SEED)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Intensities in [0, 1] -> uint8 codes round(255 x); the bundled data stores these."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def from_uint8(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / np.float32(255.0)


def resample(vol: np.ndarray, zoom: tuple[float, ...], order: int = 1) -> np.ndarray:
    """Resample a 1 mm volume onto a grid of ``zoom`` mm: voxel k' sits at 1 mm index k' * zoom."""
    from scipy.ndimage import affine_transform

    shape = tuple(int((n - 1) // z) + 1 for n, z in zip(vol.shape, zoom))
    return affine_transform(vol.astype(np.float32), np.asarray(zoom, dtype=float), output_shape=shape,
                            order=order, mode="constant", cval=0.0)


def mni152(zoom: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 (nilearn, ICBM 2009a) T1 as uint8 codes and 3-class tissue labels, on a ``zoom`` mm grid.

    Labels: argmax of (1 - p_gm - p_wm, p_gm, p_wm) after resampling the probability maps, i.e.
    a voxel is grey (white) matter when that probability beats both the other tissue and
    'neither' (CSF or outside the brain). Also returns the world z (mm) of each axial index.
    """
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    image = to_uint8(resample(t1.get_fdata(), zoom))
    pg, pw = resample(gm, zoom), resample(wm, zoom)
    labels = np.argmax(np.stack([np.clip(1.0 - pg - pw, 0.0, None), pg, pw]), axis=0).astype(np.uint8)
    z_mm = t1.affine[2, 3] + np.arange(image.shape[2]) * zoom[2]
    return image, labels, z_mm


# MNI z (mm) of the axial slab held out by both tissue models, and the guard gap around it.
HELDOUT_Z_MM = (-10.0, 30.0)
GAP_MM = 6.0


def save_weights(ref: ReferenceModel, model, half: bool = False) -> None:
    """``half``: store floating tensors as float16 (half the file; ``load_state_dict`` casts them back)."""
    import torch

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(ref.weights_path()) as tmp:
        torch.save(state, tmp)
    _readable(ref.weights_path())


def save_data(ref: ReferenceModel, images: np.ndarray, labels: np.ndarray, calibration: np.ndarray) -> None:
    """Write ``zoo/data/<name>.npz`` (uint8 images/labels/calibration, compressed)."""
    for name, a in (("images", images), ("labels", labels), ("calibration", calibration)):
        if a.dtype != np.uint8:
            raise TypeError(f"{name} must be uint8, got {a.dtype}")
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, labels=labels, calibration=calibration)
    with atomic_path(ref.data_path()) as tmp:
        tmp.write_bytes(buf.getvalue())
    _readable(ref.data_path())


def measure(ref: ReferenceModel):
    """Held-out MetricReport of the shipped weights on the bundled data (what the card records)."""
    import torch

    from medexport.evaluation import evaluate

    model = ref.build()
    images, labels = ref.heldout()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    report, _ = evaluate(predict, images, labels, task=ref.task, classes=ref.classes,
                         roi_size=ref.roi_size, spacing=ref.spacing, batch_size=EVAL_BATCH)
    return report


def write_card(ref: ReferenceModel, body: str, train_seconds: float | None) -> None:
    """Measure the held-out metrics, then write cards/<name>.json and cards/<name>.md.

    ``body`` is the model-specific prose (markdown); ``{metrics}`` and ``{training}`` in it are
    filled with the metrics table and the training time. With ``train_seconds=None`` the
    training time already in the card is kept.
    """
    report = measure(ref)
    _readable(write_json(ref.card_path().with_suffix(".json"), report.to_dict()))
    if train_seconds is None:
        train_seconds = _previous_training_time(ref)
    training = (f"{train_seconds / 60:.1f} min of wall time on 2 CPU threads "
                f"(torch.set_num_threads(2), {platform.processor() or platform.machine()}, "
                f"a machine shared with other jobs)") if train_seconds is not None else "not recorded"
    text = body.format(metrics=report.table(), training=training).strip() + "\n"
    text += f"\n<!-- train_seconds: {train_seconds if train_seconds is not None else 'none'} -->\n"
    _readable(write_text(ref.card_path(), text))
    print(report.table())


def _readable(path: Path) -> None:
    """Package files are world-readable (atomic writes create them 0600)."""
    path.chmod(0o644)


def _previous_training_time(ref: ReferenceModel) -> float | None:
    path = ref.card_path()
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("<!-- train_seconds:"):
            value = line.split(":", 1)[1].strip(" ->")
            return None if value == "none" else float(value)
    return None


class Timer:
    """Wall-clock seconds since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
