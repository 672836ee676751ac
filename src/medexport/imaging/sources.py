"""Load real medical images (and optional masks) as model-ready arrays for calibration and validation.

Example::

    spec = PreprocessSpec(spatial_size=(128, 128), intensity="window", window=(40, 400))
    data = load_images("scans/", spec, max_samples=256)
    data.images.shape        # (256, 1, 128, 128) float32 in [0, 1]
    write_json("calib.json", data.manifest())   # hashes and counts only, never patient identifiers
"""
from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from medexport._io import sha256
from medexport.imaging import _transforms as T
from medexport.imaging._discover import Unit, discover
from medexport.imaging._image import RawImage
from medexport.imaging._sampling import plan, spread, top_up
from medexport.imaging.readers import read_unit
from medexport.imaging.spec import PreprocessSpec
from medexport.errors import DataError, InputError

Source = str | os.PathLike | Sequence[str | os.PathLike]


@dataclass(frozen=True)
class SourceRecord:
    """What the manifest may know about one source: hashes, format and geometry, no names or tags.

    ``sha256`` has one entry per file (several for a DICOM series, by file path); ``shape`` is the
    spatial shape as read; ``volumes`` > 1 for a 4D NIfTI; ``n_images`` is what it gave the set.
    """

    sha256: tuple[str, ...]
    format: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    n_images: int
    volumes: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "shape": list(self.shape), "spacing": list(self.spacing),
                "volumes": self.volumes, "n_images": self.n_images, "sha256": list(self.sha256)}


@dataclass
class ImageSet:
    """Preprocessed images ``(N, C, *spatial_size)`` float32, where each came from, and what was skipped.

    ``source_index[i]`` is the index in ``records`` of image i's source (group by scan, not by slice,
    when splitting or bootstrapping). ``skipped`` holds unreadable file names for the user's eyes only;
    they never enter :meth:`manifest`.
    """

    images: np.ndarray
    records: list[SourceRecord]
    skipped: list[str] = field(default_factory=list)
    spec: PreprocessSpec | None = None
    source_index: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def manifest(self) -> dict[str, Any]:
        """Counts, per-format file counts, sha256 of every file used and the spec: reproducible, anonymous."""
        files_by_format: Counter[str] = Counter()
        for rec in self.records:
            files_by_format[rec.format] += len(rec.sha256)
        return {
            "count": len(self),
            "files_by_format": dict(sorted(files_by_format.items())),
            "sha256": [h for rec in self.records for h in rec.sha256],
            "sources": [rec.to_dict() for rec in self.records],
            "skipped_files": len(self.skipped),
            "labels": self.labels is not None,
            "preprocess": None if self.spec is None else self.spec.to_dict(),
        }


def load_images(source: Source, spec: PreprocessSpec, *, max_samples: int | None = None, seed: int = 0,
                progress: bool = False) -> ImageSet:
    """Read a folder, a file or a list of them and preprocess every image with ``spec``.

    ``max_samples`` caps the set by stratified, seeded sampling (every source contributes, slices
    spread over each volume). Unreadable files are skipped and listed; a set with none readable,
    non-finite pixels or a spec that cannot apply raises :class:`DataError`.
    """
    units, unreadable = discover(source)
    return _load(units, None, unreadable, spec, max_samples, seed, progress)


def load_labeled(images: Source, labels: Source, spec: PreprocessSpec, *, max_samples: int | None = None,
                 seed: int = 0, progress: bool = False) -> ImageSet:
    """Like :func:`load_images` for image/mask pairs, paired in sorted path order.

    Masks follow the images' geometry with nearest-neighbour resampling and come back as
    ``labels`` ``(N, *spatial_size)`` int64. E.g. ``load_labeled(sorted(d.glob("*_image.nrrd")),
    sorted(d.glob("*_label.nrrd")), spec)``.
    """
    image_units, bad_images = discover(images)
    label_units, bad_labels = discover(labels)
    if bad_images or bad_labels or len(image_units) != len(label_units):
        raise DataError(f"cannot pair images with labels: {len(image_units)} image sources "
                        f"({len(bad_images)} unreadable) vs {len(label_units)} label sources "
                        f"({len(bad_labels)} unreadable)")
    return _load(image_units, label_units, [], spec, max_samples, seed, progress)


def _load(units: list[Unit], label_units: list[Unit] | None, unreadable: list[Path], spec: PreprocessSpec,
          max_samples: int | None, seed: int, progress: bool) -> ImageSet:
    if max_samples is not None and max_samples < 1:
        raise InputError(f"max_samples must be >= 1, got {max_samples}")
    rng = np.random.default_rng(seed)
    order, quota = plan(len(units), max_samples, rng)
    skipped = [p.name for p in unreadable]
    done: dict[int, _Loaded] = {}

    def load(u: int, want: int | None) -> None:
        got = _load_unit(units[u], None if label_units is None else label_units[u], spec, want, rng)
        if got is None:
            skipped.extend(p.name for p in units[u].paths)
        else:
            done[u] = got

    with _progress(progress, len(units)) as advance:
        total = 0
        for u in map(int, order):
            if max_samples is not None and total >= max_samples:
                break
            load(u, None if quota is None else min(int(quota[u]), max_samples - total))
            total += len(done[u].images) if u in done else 0
            advance()
    if max_samples is not None and done and total < max_samples:
        # Small or unreadable sources left a shortfall: re-read the sources that had images to spare.
        spare = {u: d.available - len(d.images) for u, d in done.items() if d.available > len(d.images)}
        for u, extra in top_up(max_samples - total, spare).items():
            load(u, len(done[u].images) + extra)
    if not done:
        names = skipped[:5] + ([f"... (+{len(skipped) - 5} more)"] if len(skipped) > 5 else [])
        raise DataError(f"none of the {len(skipped)} image files could be read: {', '.join(names)}")
    keys = sorted(done)
    return ImageSet(
        images=np.concatenate([done[k].images for k in keys]),
        records=[done[k].record for k in keys],
        skipped=skipped,
        spec=spec,
        source_index=np.concatenate([np.full(len(done[k].images), i, dtype=np.int64) for i, k in enumerate(keys)]),
        labels=None if label_units is None else np.concatenate([done[k].labels for k in keys]),
    )


@dataclass
class _Loaded:
    """One source's contribution; ``available`` is how many images it could give at most."""

    images: np.ndarray
    labels: np.ndarray | None
    record: SourceRecord
    available: int


def _read(unit: Unit) -> list[RawImage] | None:
    """Images of one source, or None when it cannot be read (the caller lists it as skipped)."""
    try:
        imgs = read_unit(unit.format, unit.paths)
    except Exception:  # every parser has its own error types; any of them means "unreadable"
        return None
    for img in imgs:
        if not np.isfinite(img.array).all():
            bad = int((~np.isfinite(img.array)).sum())
            raise DataError(f"{unit.label} holds {bad} NaN/Inf pixel values; fix or remove the file")
    return imgs


def _load_unit(unit: Unit, label_unit: Unit | None, spec: PreprocessSpec, want: int | None,
               rng: np.random.Generator) -> _Loaded | None:
    """Preprocess one source, keeping ``want`` images spread over it; None when it cannot be read."""
    imgs = _read(unit)
    if imgs is None:
        return None
    masks = None
    if label_unit is not None:
        masks = _read(label_unit)
        if masks is None:
            raise DataError(f"label {label_unit.label} for image {unit.label} cannot be read")
        _check_pair(unit, imgs, label_unit, masks)
    _check_applicable(unit, imgs[0], spec)

    volumes, mask_volumes, items = [], [], []
    for v, img in enumerate(imgs):
        img = T.resample(img, spec)
        arr = T.scale_intensity(img.array, spec)
        volumes.append(arr)
        if masks is not None:
            mask_volumes.append(T.resample(masks[v], spec, label=True).array)
        if spec.ndim == 2 and img.spatial_ndim == 3:
            keep = T.informative_slices(img.array, spec.slice_axis)
            keep = keep[spread(len(keep), spec.max_slices_per_volume, rng)]
            items.extend((v, int(s)) for s in keep)
        else:
            items.append((v, None))
    picks = [items[i] for i in spread(len(items), want, rng)]
    if not picks:
        return None

    images = _gather(volumes, picks, spec)
    images = T.match_channels(T.fit_size(images, spec), spec.channels)
    labels = None
    if masks is not None:
        labels = T.fit_size(_gather(mask_volumes, picks, spec), spec, label=True)[:, 0]
        labels = np.rint(labels).astype(np.int64)
    record = SourceRecord(
        sha256=tuple(sha256(p) for p in sorted(unit.paths)),
        format=unit.format,
        shape=tuple(imgs[0].array.shape[1:]),
        spacing=imgs[0].spacing,
        n_images=len(picks),
        volumes=len(imgs),
    )
    return _Loaded(images, labels, record, available=len(items))


def _gather(volumes: list[np.ndarray], picks: list[tuple[int, int | None]], spec: PreprocessSpec) -> np.ndarray:
    """Stack the picked whole images or slices into one (K, C, *spatial) batch."""
    parts = []
    for v, s in picks:
        vol = volumes[v]
        parts.append(vol[None] if s is None else T.take_slices(vol, spec.slice_axis, np.array([s])))
    return np.concatenate(parts)


def _check_applicable(unit: Unit, img: RawImage, spec: PreprocessSpec) -> None:
    if spec.ndim == 3 and img.spatial_ndim == 2:
        raise DataError(f"spatial_size {spec.spatial_size} is 3D but {unit.label} is a 2D image "
                        f"of shape {img.array.shape[1:]}; use a 2D spatial_size")
    c = img.array.shape[0]
    if T.match_channels(np.zeros((1, c, 1, 1), np.float32), spec.channels) is None:
        raise DataError(f"{unit.label} has {c} channels; cannot make the {spec.channels} the spec asks for")


def _check_pair(unit: Unit, imgs: list[RawImage], label_unit: Unit, masks: list[RawImage]) -> None:
    shapes = [i.array.shape[1:] for i in imgs]
    mask_shapes = [m.array.shape[1:] for m in masks]
    if shapes != mask_shapes:
        raise DataError(f"label {label_unit.label} has shape {mask_shapes[0]} but image {unit.label} "
                        f"has {shapes[0]}")


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """A transient rich progress bar over sources when asked for; yields its ``advance()``."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("reading images", total=total)
        yield lambda: bar.advance(task)
