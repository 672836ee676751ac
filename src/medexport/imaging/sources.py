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
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from medexport._io import sha256
from medexport.imaging import _transforms as T
from medexport.imaging._discover import Unit, discover
from medexport.imaging._image import RawImage, Unusable
from medexport.imaging._sampling import plan, spread, top_up
from medexport.imaging.readers import read_unit
from medexport.imaging.spec import PreprocessSpec
from medexport.errors import DataError, DataWarning, InputError

Source = str | os.PathLike | Sequence[str | os.PathLike]
# Label maps saved beside their images (pyradiomics' *_label.nrrd, *_mask.nii.gz, *_seg.npy) are not images: a
# file so named whose values are a few integers is skipped.
_LABEL_NAME = re.compile(r"[_.-](label|labels|labelmap|mask|masks|seg|segmentation)$", re.IGNORECASE)
_LABEL_MAX_VALUES = 16


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
    when splitting or bootstrapping). ``skipped`` holds (file name, reason) of every file that gave no
    image; the names are for the user's eyes only: :meth:`manifest` counts the reasons, never names a file.
    """

    images: np.ndarray
    records: list[SourceRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)
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
            "skipped_reasons": dict(Counter(why for _, why in self.skipped).most_common(5)),
            "labels": self.labels is not None,
            "preprocess": None if self.spec is None else self.spec.to_dict(),
        }

    def skipped_summary(self, limit: int = 3) -> str:
        """The first skipped files with their reasons, on one line: 'a.dcm (why); b.npy (why) (+4 more)'."""
        return _summarize(self.skipped, limit)


def _summarize(skipped: list[tuple[str, str]], limit: int) -> str:
    """The first ``limit`` (file name, reason) pairs on one line, and how many more there are."""
    text = "; ".join(f"{name} ({why})" for name, why in skipped[:limit])
    return text + (f" (+{len(skipped) - limit} more)" if len(skipped) > limit else "")


def load_images(source: Source, spec: PreprocessSpec, *, max_samples: int | None = None, seed: int = 0,
                progress: bool = False) -> ImageSet:
    """Read a folder, a file or a list of them and preprocess every image with ``spec``.

    ``max_samples`` caps the set by stratified, seeded sampling (every source contributes, slices
    spread over each volume). Files that give no image (unreadable, no decoder for their compression, a
    DICOM SEG/RTSTRUCT/SR, a label map, an array of no image shape) are skipped, listed with their reason
    in ``skipped`` and summarized in a :class:`~medexport.errors.DataWarning`; a set with none readable,
    non-finite pixels or a spec that cannot apply raises :class:`DataError`.
    """
    units, refused = discover(source)
    return _warn_skipped(_load(units, None, refused, spec, max_samples, seed, progress),
                         sum(len(u.paths) for u in units) + len(refused))


def load_labeled(images: Source, labels: Source, spec: PreprocessSpec, *, max_samples: int | None = None,
                 seed: int = 0, progress: bool = False) -> ImageSet:
    """Like :func:`load_images` for image/mask pairs, paired in sorted path order (a pair whose image gives
    none is skipped and reported; a refused file or a mask that cannot be read is a :class:`DataError`).

    Masks follow the images' geometry with nearest-neighbour resampling and come back as
    ``labels`` ``(N, *spatial_size)`` int64. E.g. ``load_labeled(sorted(d.glob("*_image.nrrd")),
    sorted(d.glob("*_label.nrrd")), spec)``.
    """
    image_units, bad_images = discover(images)
    label_units, bad_labels = discover(labels)
    if bad_images or bad_labels or len(image_units) != len(label_units):
        refused = [(p.name, why) for p, why in bad_images + bad_labels]
        raise DataError(f"cannot pair images with labels: {len(image_units)} image sources "
                        f"({len(bad_images)} refused) vs {len(label_units)} label sources "
                        f"({len(bad_labels)} refused)" + (f": {_summarize(refused, 3)}" if refused else ""))
    return _warn_skipped(_load(image_units, label_units, [], spec, max_samples, seed, progress),
                         sum(len(u.paths) for u in image_units))


def _warn_skipped(data: ImageSet, files: int) -> ImageSet:
    if data.skipped:
        warnings.warn(f"skipped {len(data.skipped)} of {files} image files: {data.skipped_summary()}", DataWarning,
                      stacklevel=3)
    return data


def _load(units: list[Unit], label_units: list[Unit] | None, refused: list[tuple[Path, str]], spec: PreprocessSpec,
          max_samples: int | None, seed: int, progress: bool) -> ImageSet:
    if max_samples is not None and max_samples < 1:
        raise InputError(f"max_samples must be >= 1, got {max_samples}")
    rng = np.random.default_rng(seed)
    order, quota = plan(len(units), max_samples, rng)
    skipped = [(p.name, why) for p, why in refused]
    done: dict[int, _Loaded] = {}

    def load(u: int, want: int | None) -> None:
        try:
            done[u] = _load_unit(units[u], None if label_units is None else label_units[u], spec, want, rng)
        except Unusable as exc:
            skipped.extend((p.name, str(exc)) for p in units[u].paths)

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
        raise DataError(f"none of the {len(skipped)} image files could be read: {_summarize(skipped, 5)}")
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


def _read(unit: Unit) -> list[RawImage]:
    """Images of one source, or :class:`Unusable` saying why not (the caller lists it as skipped)."""
    try:
        imgs = read_unit(unit.format, unit.paths)
    except Unusable:
        raise
    except Exception as exc:  # every parser has its own error types; any of them means "unreadable"
        # the type, not the message: parsers quote paths and header values, and reasons reach the manifest
        shown = {"dicom": "DICOM", "nifti": "NIfTI", "nrrd": "NRRD/MHA"}.get(unit.format, unit.format.upper())
        raise Unusable(f"not a readable {shown} file ({type(exc).__name__})") from None
    for img in imgs:
        if not np.isfinite(img.array).all():
            bad = int((~np.isfinite(img.array)).sum())
            raise DataError(f"{unit.label} holds {bad} NaN/Inf pixel values; fix or remove the file")
    return imgs


def _load_unit(unit: Unit, label_unit: Unit | None, spec: PreprocessSpec, want: int | None,
               rng: np.random.Generator) -> _Loaded:
    """Preprocess one source, keeping ``want`` images spread over it; :class:`Unusable` when it gives none."""
    imgs = _read(unit)
    label_map = _label_map(unit, imgs)
    if label_map is not None:
        raise Unusable(label_map)
    masks = None
    if label_unit is not None:
        try:
            masks = _read(label_unit)
        except Unusable as exc:
            raise DataError(f"label {label_unit.label} for image {unit.label} cannot be read: {exc}") from None
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
        raise Unusable("holds no image")

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


def _label_map(unit: Unit, imgs: list[RawImage]) -> str | None:
    """Why a source is a label map rather than an image (named as one, a few integer values), or None."""
    stem = unit.paths[0].name.split(".")[0]
    if len(unit.paths) > 1 or not _LABEL_NAME.search(stem):
        return None
    arr = imgs[0].array
    sample = arr.reshape(-1)[:: max(1, arr.size // 1_000_000)]
    values = np.unique(sample)
    if len(values) > _LABEL_MAX_VALUES or not np.array_equal(values, np.round(values)):
        return None
    return f"a label map, not an image (named so, {len(values)} integer values)"


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
