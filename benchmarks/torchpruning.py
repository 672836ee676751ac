"""Against Torch-Pruning on TRAINED networks: kept output at equal latency, realized speed-up at equal channel ratio.

Two MONAI networks Torch-Pruning can prune, trained here (each in a few minutes on 2 threads, then cached) on
the offline nilearn MNI152 T1 template and its grey/white-matter probability maps, never on the held-out axial
slab MNI z in [-10, 30] mm (the slab the zoo's tissue U-Nets hold out; a 6 mm guard gap on each side):

* **ResNet-18 2D at 224^2** (``resnet18(spatial_dims=2, n_input_channels=1, num_classes=3)``): the tissue class
  (background / grey / white matter) of the centre voxel of a 16 x 16 mm axial patch at 1 mm, resized to 224^2.
  Held out: 90 class-balanced patches centred in the slab. Kept output: argmax agreement with the original
  (and accuracy against the tissue labels).
* **SegResNet 3D at 64^3** (``init_filters=16``): white matter vs rest at 2 mm, trained on 32^3 crops with the
  slab and its gaps blanked (image 0, label rest); the four held-out 64^3 crops are centred on the slab and
  scored on the slab's voxels only. Kept output: worst-class Dice against the original's masks (and against
  the labels).

Parts (``--part``):

1. ``ratio``: half the channels of every group by Torch-Pruning's DepGraph ``MagnitudePruner`` (L2, per layer,
   head ignored) and by our ``prune-l2`` (one-shot); MACs, realized speed-up on OpenVINO CPU (the original and
   both results compiled together, timed interleaved, median), kept output as pruned and after the same
   ``--finetune`` distillation steps from the original for each (one-shot pruning of a trained network, by either
   tool, leaves little of its output; ``--seeds`` distillation seeds each, median and range); ``--match-latency``
   adds our ``prune-l2 --latency`` asked for Torch-Pruning's measured latency ratio (2 steps, calibration images
   from the training side; BatchNorm statistics re-estimated on them where that keeps the output closer, as the
   latency mode does: Torch-Pruning's model is also scored one-shot with its statistics re-estimated), timed
   again together with the original and Torch-Pruning's model. ``--group-norm groups`` prunes SegResNet's
   GroupNorms a whole norm group at a time (our exact mode) instead of single channels.
   The distillation is class-balanced (the library's default).
2. ``importance``: our producer-only L2 against group-wide L2 scores (producers' filters + consumers' input
   columns + affine norm scales; Torch-Pruning's sum of squares, and a sum of norms) at ratio 0.5, one-shot, on
   the two trained networks and the zoo's trained tissue U-Nets (held-out data of their cards). An experiment:
   the scores are defined here, ``importance.py`` is unchanged.
3. ``distill``: Torch-Pruning's half-channel model distilled ``--finetune`` steps with the plain mean loss and
   with the class-balanced one (the library's default), on ``--crops`` training-side images.

    python benchmarks/torchpruning.py --part ratio --threads 1 --match-latency [--finetune 30] [--seeds 5]
                                      [--models ResNet-18]
                                      [--group-norm groups]
    python benchmarks/torchpruning.py --part importance
    python benchmarks/torchpruning.py --part distill --models SegResNet --finetune 100 --crops 8 32

Trained weights are cached in ``$MEDEXPORT_CACHE/torchpruning`` (default ``~/.cache/medexport``), keyed by the
training recipe, so a rerun skips training. Timing takes the machine-wide benchmark lock. Needs
``pip install torch-pruning nilearn``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _lock import bench_lock
from _machine import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "zoo"))

ROUNDS = 31  # interleaved timing rounds (15 let the same model swing from 0.43 to 0.36 of the original)
HELDOUT_Z_MM, GAP_MM = (-10.0, 30.0), 6.0   # as the zoo's tissue models (scripts/zoo/_common.py)
SEED = 0


@dataclass
class Trained:
    """A trained network, its input shape, held-out images and labels, training-side calibration images, and how
    its output is compared (``kept(reference_logits, logits, labels) -> {measure: value}``)."""

    name: str
    model: object
    shape: tuple[int, ...]
    images: np.ndarray
    labels: np.ndarray
    calibration: np.ndarray
    kept: Callable
    roi_size: tuple[int, ...] | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


# -- data ------------------------------------------------------------------------------------------

def _mni152(zoom: float):
    """MNI152 T1 in [0, 1], 3-class tissue labels and the world z (mm) of each axial index, on a ``zoom`` mm grid."""
    from _common import from_uint8, mni152

    image, labels, z_mm = mni152((zoom, zoom, zoom))
    return from_uint8(image), labels, z_mm


def _slab(z_mm: np.ndarray, gap: float = 0.0) -> np.ndarray:
    z0, z1 = HELDOUT_Z_MM
    return (z_mm >= z0 - gap) & (z_mm <= z1 + gap)


PATCH = 16


def _candidates(labels: np.ndarray, z_ok: np.ndarray) -> list[np.ndarray]:
    """(x, y, z) voxels of each tissue class with z in ``z_ok`` and a whole patch inside the brain's in-plane box."""
    xs, ys, _ = np.nonzero(labels)
    h = PATCH // 2
    box = np.zeros(labels.shape, dtype=bool)
    box[max(xs.min(), h):min(xs.max(), labels.shape[0] - h), max(ys.min(), h):min(ys.max(), labels.shape[1] - h)] = True
    box &= z_ok[None, None, :]
    return [np.argwhere(box & (labels == k)) for k in range(3)]


def _sample(candidates: list[np.ndarray], per_class: int, rng) -> np.ndarray:
    """``per_class`` centres of each class, in class order."""
    return np.concatenate([c[rng.choice(len(c), per_class, replace=False)] for c in candidates])


def _patches(image: np.ndarray, centres: np.ndarray, size: int = 224) -> np.ndarray:
    """(N, 1, size, size) float32 axial patches around ``centres``, bilinearly resized."""
    import torch

    h = PATCH // 2
    raw = np.stack([image[x - h:x + h, y - h:y + h, z] for x, y, z in centres])[:, None]
    return torch.nn.functional.interpolate(torch.from_numpy(raw), size=(size, size), mode="bilinear",
                                           align_corners=False).numpy()


def classifier_data(per_class: int = 30):
    image, labels, z_mm = _mni152(1.0)
    rng = np.random.default_rng(SEED + 1)
    test = _sample(_candidates(labels, _slab(z_mm)), per_class, rng)
    calib = _sample(_candidates(labels, ~_slab(z_mm, GAP_MM)), 16, rng)
    return image, labels, z_mm, test, calib


CROP = 64


def segmentation_data():
    """2 mm image and white-matter labels (in-plane box 80 x 96 around the brain), slab mask per z, and the
    training volume (slab and gaps blanked)."""
    image, labels, z_mm = _mni152(2.0)
    wm = (labels == 2).astype(np.int64)
    xs, ys = np.nonzero(labels.any(axis=2))
    box = []
    for lo, hi, size, n in ((xs.min(), xs.max(), 80, image.shape[0]), (ys.min(), ys.max(), 96, image.shape[1])):
        start = min(max((lo + hi + 1) // 2 - size // 2, 0), n - size)
        box.append(slice(start, start + size))
    image, wm = image[box[0], box[1]], wm[box[0], box[1]]
    blank = _slab(z_mm, GAP_MM)
    train_img, train_lab = image.copy(), wm.copy()
    train_img[:, :, blank], train_lab[:, :, blank] = 0.0, 0
    return image, wm, _slab(z_mm), train_img, train_lab


def _heldout_crops(image, wm, slab):
    """64^3 crops centred on the slab at four in-plane corners; labels outside the slab set to -1 (not scored)."""
    ks = np.nonzero(slab)[0]
    z = min(max((ks[0] + ks[-1] + 1) // 2 - CROP // 2, 0), image.shape[2] - CROP)
    imgs, labs = [], []
    for x in (0, image.shape[0] - CROP):
        for y in (0, image.shape[1] - CROP):
            sl = (slice(x, x + CROP), slice(y, y + CROP), slice(z, z + CROP))
            lab = np.where(slab[None, None, z:z + CROP], wm[sl], -1)
            imgs.append(image[sl][None])
            labs.append(lab)
    return np.stack(imgs).astype(np.float32), np.stack(labs)


def _random_crops(rng, image, labels, n: int, size: int = CROP):
    imgs, labs = [], []
    for _ in range(n):
        o = [rng.integers(0, s - size + 1) for s in image.shape]
        sl = tuple(slice(a, a + size) for a in o)
        imgs.append(image[sl][None])
        labs.append(labels[sl])
    return np.stack(imgs).astype(np.float32), np.stack(labs)


# -- training (cached) -----------------------------------------------------------------------------

def _cache_file(recipe: dict) -> Path:
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(os.environ.get("MEDEXPORT_CACHE", Path.home() / ".cache" / "medexport"))
    return root / "torchpruning" / f"{recipe['network']}-{key}.pt"


def _cached_or_train(model, recipe: dict, train: Callable) -> float | None:
    """Load the state_dict trained by ``recipe`` from the cache, or train (``train(model)``) and store it; returns
    the training seconds (None when cached)."""
    import torch

    from medexport._io import atomic_path

    path = _cache_file(recipe)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        print(f"{recipe['network']}: trained weights from {path}", file=sys.stderr)
        return None
    start = time.perf_counter()
    train(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return time.perf_counter() - start


CLASSIFIER_RECIPE = {"network": "resnet18-2d-tissue", "patch_mm": PATCH, "stages": [[96, 80, 16], [224, 15, 8]],
                     "lr": 1e-3, "seed": SEED, "heldout_z_mm": HELDOUT_Z_MM, "gap_mm": GAP_MM, "version": 1}


def classifier() -> Trained:
    """ResNet-18 trained in two stages (size, steps, batch): mostly on patches resized to 96^2 (a 224^2 step of 16
    patches takes 12-15 s on this shared 2-core machine), then at 224^2, the size it is measured at."""
    import torch
    from monai.networks.nets import resnet18

    image, labels, z_mm, test, calib = classifier_data()
    torch.manual_seed(SEED)
    model = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3)
    recipe = CLASSIFIER_RECIPE

    def train(m):
        rng = np.random.default_rng(SEED)
        opt = torch.optim.Adam(m.parameters(), lr=recipe["lr"])
        total = sum(steps for _, steps, _ in recipe["stages"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
        pool = _candidates(labels, ~_slab(z_mm, GAP_MM))
        m.train()
        step = 0
        for size, steps, batch in recipe["stages"]:
            for _ in range(steps):
                centres = _sample(pool, batch // 3 + 1, rng)[rng.permutation(3 * (batch // 3 + 1))[:batch]]
                x = _patches(image, centres, size)
                if rng.random() < 0.5:
                    x = x[..., ::-1].copy()
                y = torch.from_numpy(labels[tuple(centres.T)].astype(np.int64))
                loss = torch.nn.functional.cross_entropy(m(torch.from_numpy(x)), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if step % 10 == 0 or step == total - 1:
                    print(f"ResNet-18 step {step:4d} ({size}^2) loss {loss.item():.4f}", file=sys.stderr, flush=True)
                step += 1

    seconds = _cached_or_train(model, recipe, train)
    images = _patches(image, test)
    truth = labels[tuple(test.T)].astype(np.int64)
    return Trained("ResNet-18 2D 224^2", model.eval(), (1, 1, 224, 224), images, truth,
                   _patches(image, calib), _kept_classes, extra={"train_s": seconds})


SEGMENTER_RECIPE = {"network": "segresnet-3d-wm", "train_crop": 32, "zoom_mm": 2.0, "steps": 250, "batch": 4,
                    "lr": 3e-3, "seed": SEED, "heldout_z_mm": HELDOUT_Z_MM, "gap_mm": GAP_MM, "version": 2}


def segmenter() -> Trained:
    """SegResNet trained on 32^3 crops (fully convolutional; a 64^3 step of 2 crops takes 4-5 s here, and 60 of
    them did not learn white matter), measured on 64^3 crops."""
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import SegResNet

    image, wm, slab, train_img, train_lab = segmentation_data()
    torch.manual_seed(SEED)
    model = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=16)
    recipe = SEGMENTER_RECIPE

    def train(m):
        rng = np.random.default_rng(SEED)
        opt = torch.optim.Adam(m.parameters(), lr=recipe["lr"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe["steps"])
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        m.train()
        for step in range(recipe["steps"]):
            x, y = _random_crops(rng, train_img, train_lab, recipe["batch"], recipe["train_crop"])
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1].copy(), y[:, ::-1].copy()
            loss = loss_fn(m(torch.from_numpy(x)), torch.from_numpy(y[:, None]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if step % 25 == 0 or step == recipe["steps"] - 1:
                print(f"SegResNet step {step:4d} loss {loss.item():.4f}", file=sys.stderr, flush=True)

    seconds = _cached_or_train(model, recipe, train)
    images, labels = _heldout_crops(image, wm, slab)
    calib, _ = _random_crops(np.random.default_rng(SEED + 1), train_img, train_lab, 8)
    return Trained("SegResNet 3D 64^3", model.eval(), (1, 1, CROP, CROP, CROP), images, labels, calib,
                   _kept_masks, extra={"train_s": seconds})


NETWORKS = {"ResNet-18": classifier, "SegResNet": segmenter}


# -- output kept -----------------------------------------------------------------------------------

def _kept_classes(reference, logits, labels) -> dict[str, float]:
    """Argmax agreement with the original's predictions, and accuracy against the tissue labels."""
    pred = logits.argmax(1)
    return {"agree": float((pred == reference.argmax(1)).mean()), "accuracy": float((pred == labels).mean())}


def worst_dice(a: np.ndarray, b: np.ndarray, classes: int, scored: np.ndarray | None = None) -> float:
    """Lowest per-class Dice of masks ``a`` and ``b`` (over the ``scored`` voxels only, when given)."""
    if scored is not None:
        a, b = a[scored], b[scored]
    dice = []
    for k in range(classes):
        x, y = a == k, b == k
        total = x.sum() + y.sum()
        dice.append(2.0 * (x & y).sum() / total if total else 1.0)
    return float(min(dice))


def _kept_masks(reference, logits, labels) -> dict[str, float]:
    """Worst-class Dice against the original's masks and against the labels, on the scored (labelled) voxels."""
    scored = labels >= 0
    pred, k = logits.argmax(1), logits.shape[1]
    return {"Dice vs original": worst_dice(pred, reference.argmax(1), k, scored),
            "Dice vs labels": worst_dice(pred, labels, k, scored)}


def predict(model, images: np.ndarray, roi_size=None) -> np.ndarray:
    import torch

    from medexport.evaluation.evaluate import predict_all

    def run(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return predict_all(run, images, batch_size=4, roi_size=roi_size)


def _fmt(kept: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in kept.items())


def _kept_after(net: Trained, reference, model, finetune: int, seeds: int = 1) -> str:
    """What ``model`` keeps of the original's output as pruned, and after ``finetune`` distillation steps from the
    original on the training-side calibration images (the same recovery for every pruned model; the structure, and
    so the latency, is unchanged by it), with ``seeds`` seeds of the batches and augmentations: median (range).
    Short distillations swing with the seed: ResNet-18 halved, 20 steps, agreed 71-96% over three seeds."""
    import copy

    from medexport.finetune.distill import DistillConfig, distill

    text = "one-shot: " + _fmt(net.kept(reference, predict(model, net.images), net.labels))
    if finetune:
        runs = [net.kept(reference, predict(distill(copy.deepcopy(model), net.model, net.calibration,
                                                    DistillConfig(finetune, seed=seed))[0], net.images), net.labels)
                for seed in range(seeds)]
        kept = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        spread = "" if seeds == 1 else ", ".join(
            f"{min(r[k] for r in runs):.3f}-{max(r[k] for r in runs):.3f}" for k in runs[0])
        text += f"; +{finetune} distillation steps: {_fmt(kept)}" + (f" (range {spread}; {seeds} seeds)" if spread else "")
    return text


# -- part 1: against Torch-Pruning -----------------------------------------------------------------

def torch_pruning(model, shape, ratio: float):
    """Torch-Pruning's DepGraph MagnitudePruner (L2, per layer) at ``ratio``, the head (last conv/linear) kept."""
    import copy

    import torch
    import torch_pruning as tp

    theirs = copy.deepcopy(model)
    head = [m for m in theirs.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d))][-1]
    tp.pruner.MagnitudePruner(theirs, torch.zeros(shape), importance=tp.importance.MagnitudeImportance(p=2),
                              pruning_ratio=ratio, global_pruning=False, ignored_layers=[head]).step()
    return theirs.eval()


def ratio_rows(nets: list[Trained], ratio: float, threads: int | None, match: bool, finetune: int,
               group_norm: str = "channels", seeds: int = 1) -> list[str]:
    import torch_pruning as tp

    from medexport.compression import get_pass
    from medexport.compression._latency import Timer
    from medexport.compression.base import model_macs
    from medexport.compression.pruning import PruneConfig

    lines = [f"{ratio:.0%} of the channels of every group, one-shot: Torch-Pruning {tp.__version__} DepGraph "
             f"MagnitudePruner (L2, head ignored) vs our prune-l2 (kept counts rounded to 8, GroupNorm losing "
             f"{group_norm}). Trained networks; "
             f"OpenVINO CPU, batch 1, {threads or 'default'} thread(s), median of interleaved rounds. Kept output on "
             f"the held-out images, as pruned and after the same {finetune} distillation steps for each. {machine()}",
             "",
             "| network | original: held-out | MACs original (M) | fewer MACs ours / TP | ms original | ms ours / TP "
             "| speed-up ours / TP | kept, ours | kept, TP |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
    matched = []
    for net in nets:
        shape = net.shape
        ours = get_pass("prune-l2").apply(net.model, shape, PruneConfig(ratio=ratio, group_norm=group_norm))[0].eval()
        theirs = torch_pruning(net.model, shape, ratio)
        macs = [model_macs(m, shape) for m in (net.model, ours, theirs)]
        with bench_lock(), Timer("openvino", shape, threads=threads, rounds=ROUNDS, calls=3) as timer:
            base, ms_ours, ms_tp = timer.time([timer.open(m) for m in (net.model, ours, theirs)])
        reference = predict(net.model, net.images)
        original = net.kept(reference, reference, net.labels)
        kept = [_kept_after(net, reference, m, finetune, seeds) for m in (ours, theirs)]
        lines.append(f"| {net.name} | {_fmt(original)} | {macs[0] / 1e6:.0f} "
                     f"| {macs[0] / macs[1]:.2f}x / {macs[0] / macs[2]:.2f}x | {base:.2f} "
                     f"| {ms_ours:.2f} / {ms_tp:.2f} | {base / ms_ours:.2f}x / {base / ms_tp:.2f}x "
                     f"| {kept[0]} | {kept[1]} |")
        print(lines[-1], file=sys.stderr, flush=True)
        if match:
            matched.append(_matched_row(net, theirs, ms_tp / base, threads, reference, finetune, kept[1], group_norm,
                                        seeds))
            print(matched[-1], file=sys.stderr, flush=True)
    if matched:
        lines += ["", "At Torch-Pruning's measured latency: our prune-l2 --latency (2 steps, no fine-tuning inside "
                  "the pass, output distortion measured on training-side calibration images, BatchNorm statistics "
                  "re-estimated on them where closer) asked for it; "
                  "Torch-Pruning's model as above (one-shot). The original and both results timed together again; "
                  f"kept output as pruned and after the same {finetune} distillation steps for each.", "",
                  "| network | asked | ours predicted / measured in the pass | measured here ours / TP "
                  "| fewer MACs ours / TP | kept, ours | kept, TP | kept one-shot, TP + our BatchNorm adaptation "
                  "| pass s |", "|---|---:|---:|---:|---:|---|---|---|---:|", *matched]
    return lines + ["", f"After: {machine()}"]


def _matched_row(net: Trained, theirs, target: float, threads: int | None, reference, finetune: int,
                 kept_theirs: str, group_norm: str = "channels", seeds: int = 1) -> str:
    """Our latency mode asked for ``target`` (Torch-Pruning's measured ratio), timed beside the original and theirs
    (whose kept output, ``kept_theirs``, is already known)."""
    import copy

    from medexport.compression import get_pass
    from medexport.compression._latency import Timer
    from medexport.compression.base import model_macs
    from medexport.compression.pruning import PruneConfig
    from medexport.compression.pruning.batchnorm import adapt_batchnorm

    start = time.perf_counter()
    ours, record = get_pass("prune-l2").apply(net.model, net.shape, PruneConfig(
        latency=target, steps=2, threads=threads, calibration=net.calibration, group_norm=group_norm))
    seconds = time.perf_counter() - start
    ours.eval()
    with bench_lock(), Timer("openvino", net.shape, threads=threads, rounds=ROUNDS, calls=3) as timer:
        base, ms_ours, ms_tp = timer.time([timer.open(m) for m in (net.model, ours, theirs)])
    kept = [_kept_after(net, reference, ours, finetune, seeds), kept_theirs]
    adapted = copy.deepcopy(theirs)
    adapt_batchnorm(adapted, net.calibration)  # how much of ours is the adaptation rather than the widths
    kept_adapted = _fmt(net.kept(reference, predict(adapted.eval(), net.images), net.labels))
    macs = [model_macs(m, net.shape) for m in (net.model, ours, theirs)]
    lat = record.latency
    return (f"| {net.name} | {target:.2f} | {lat['predicted']:.2f} / {lat['measured']:.2f} | {ms_ours / base:.2f} / "
            f"{ms_tp / base:.2f} | {macs[0] / macs[1]:.2f}x / {macs[0] / macs[2]:.2f}x | {kept[0]} | {kept[1]} "
            f"| {kept_adapted} | {seconds:.0f} |")


# -- part 3: distillation, plain vs class-balanced ---------------------------------------------------

def distill_rows(nets: list[Trained], ratio: float, steps: int, crops: list[int]) -> list[str]:
    """Torch-Pruning's model at ``ratio`` distilled ``steps`` from the original, from the same pruned weights, with
    the plain mean loss and the class-balanced one, on the first ``crops`` training-side images (SegResNet: fresh
    random crops, the first 8 being the ratio part's)."""
    import copy

    from medexport.finetune.distill import DistillConfig, distill

    lines = [f"Torch-Pruning's model at {ratio:.0%} of the channels, {steps} distillation steps from the original, "
             f"plain mean vs class-balanced loss; kept output on the held-out images. {machine()}", "",
             "| network | training images | kept, plain mean | kept, balanced |", "|---|---:|---|---|"]
    for net in nets:
        theirs = torch_pruning(net.model, net.shape, ratio)
        reference = predict(net.model, net.images)
        for n in crops:
            images = _more_crops(n) if net.images.ndim == 5 else net.calibration[:n]
            kept = [_fmt(net.kept(reference, predict(distill(copy.deepcopy(theirs), net.model, images, DistillConfig(
                steps, balanced=balanced))[0], net.images), net.labels)) for balanced in (False, True)]
            lines.append(f"| {net.name} | {len(images)} | {kept[0]} | {kept[1]} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def _more_crops(n: int) -> np.ndarray:
    """``n`` training-side crops for SegResNet, drawn as its calibration crops are (the first 8 are those)."""
    _, _, _, train_img, train_lab = segmentation_data()
    return _random_crops(np.random.default_rng(SEED + 1), train_img, train_lab, n)[0]


# -- part 2: group-wide L2 (an experiment) ---------------------------------------------------------

def group_l2(member_score: str):
    """A group-wide L2 importance: each member's per-channel slice (producers' filters, consumers' input columns,
    affine norm scales) scored by its squared L2 norm (``"squares"``, Torch-Pruning's MagnitudeImportance p=2, whose
    mean over members and per-group normaliser do not change a layer-scope ranking) or its L2 norm (``"norms"``),
    summed over the members into the group's classes."""
    from medexport.compression.pruning.importance import _accumulate, _is_affine_norm, _rows

    def slices(member):
        from torch import nn

        module = member.module
        if member.role == "out":
            return _rows(module)
        if member.role == "channel":
            return module.weight.detach().reshape(-1, 1) if _is_affine_norm(module) else None
        w = getattr(module, "weight", None)
        if w is None or getattr(module, "groups", 1) != 1:
            return None
        w = w.detach()
        if not isinstance(module, nn.modules.conv._ConvTransposeNd):
            w = w.transpose(0, 1)   # conv (out, in, ...) and linear (out, in): input channel first
        return w.reshape(w.shape[0], -1) if w.shape[0] == len(member.labels) else None

    def score(group, graph):
        members = [(m, s) for m in group.members if (s := slices(m)) is not None]
        table = {id(m): s for m, s in members}

        def per_channel(member):
            squares = table[id(member)].double().pow(2).sum(dim=1)
            return squares if member_score == "squares" else squares.sqrt()

        return _accumulate(group, graph, [m for m, _ in members], per_channel)

    return score


def _zoo_unet(name: str) -> Trained:
    from medexport.evaluation.validation import reference_data
    from medexport.zoo import get_model

    ref = get_model(name)
    data = reference_data(ref)
    roi = tuple(data.roi_size) if data.roi_size else None

    def kept(reference, logits, labels):
        k = logits.shape[1]
        pred, labels = logits.argmax(1), labels[:, 0] if labels.ndim == logits.ndim else labels
        return {"Dice vs original": worst_dice(pred, reference.argmax(1), k),
                "Dice vs labels": worst_dice(pred, labels, k)}

    return Trained(name, ref.build().eval(), tuple(ref.input_shape), data.images, data.labels, ref.calibration(),
                   kept, roi_size=roi)


def importance_rows(nets: list[Trained], ratio: float) -> list[str]:
    from contextlib import nullcontext
    from unittest import mock

    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig

    scores = {"ours (producers' filters)": None, "group, sum of squares (TP)": group_l2("squares"),
              "group, sum of norms": group_l2("norms")}
    lines = [f"prune-l2 at ratio {ratio}, one-shot, no fine-tuning, the importance swapped in (scratch scores in "
             "benchmarks/torchpruning.py, not in the package). Held-out data; kept output against the original.", "",
             f"| network | original | {' | '.join(scores)} |", "|---|---|" + "---|" * len(scores)]
    pass_type = type(get_pass("prune-l2"))
    for net in nets:
        reference = predict(net.model, net.images, net.roi_size)
        cells = []
        for label, importance in scores.items():
            swap = mock.patch.object(pass_type, "importance", staticmethod(importance)) if importance else None
            with swap or nullcontext():
                small = get_pass("prune-l2").apply(net.model, net.shape, PruneConfig(ratio=ratio))[0].eval()
            cells.append(_fmt(net.kept(reference, predict(small, net.images, net.roi_size), net.labels)))
            print(f"{net.name} | {label} | {cells[-1]}", file=sys.stderr, flush=True)
        original = _fmt(net.kept(reference, reference, net.labels))
        lines.append(f"| {net.name} | {original} | {' | '.join(cells)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["ratio", "importance", "both", "distill"], default="ratio")
    parser.add_argument("--crops", nargs="+", type=int, default=[8, 32],
                        help="distill part: training images (SegResNet crops) to distil on")
    parser.add_argument("--models", nargs="+", default=None,
                        help="networks: ResNet-18, SegResNet, and for --part importance zoo U-Nets (default: all)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=None, help="OpenVINO inference threads")
    parser.add_argument("--finetune", type=int, default=30,
                        help="ratio part: distillation steps applied alike to every pruned model (0: none)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="ratio part: distillation seeds per pruned model (median and range reported)")
    parser.add_argument("--group-norm", choices=["channels", "groups"], default="channels",
                        help="ratio part: how our passes prune a GroupNorm (single channels, or whole norm groups)")
    parser.add_argument("--match-latency", action="store_true",
                        help="also our latency mode at Torch-Pruning's measured latency")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    wanted = args.models or [*NETWORKS, "brain-tissue-unet2d", "brain-tissue-unet3d"]
    trained = []
    for key in [k for k in NETWORKS if k in wanted]:
        net = NETWORKS[key]()
        seconds = net.extra["train_s"]
        how = f"trained in {seconds:.0f} s" if seconds else "cached"
        print(f"{net.name}: {how}; held-out: "
              f"{_fmt(net.kept(*(2 * [predict(net.model, net.images)]), net.labels))}", file=sys.stderr, flush=True)
        trained.append(net)
    if args.part in ("ratio", "both"):
        print("\n".join(ratio_rows(trained, args.ratio, args.threads, args.match_latency, args.finetune,
                                    args.group_norm, args.seeds)) + "\n")
    if args.part == "distill":
        print("\n".join(distill_rows(trained, args.ratio, args.finetune, args.crops)) + "\n")
    if args.part in ("importance", "both"):
        unets = [_zoo_unet(n) for n in wanted if n not in NETWORKS]
        print("\n".join(importance_rows(trained + unets, args.ratio)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
