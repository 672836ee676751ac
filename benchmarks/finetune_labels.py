"""Recovery of a pruned reference model: distillation from the original vs fine-tuning on labels, same steps.

The reference U-Nets were trained on the MNI152 template (nilearn's copy; ``scripts/zoo/train_*.py``); their
training-side images and labels are rebuilt here with the training scripts' own functions (the slab held out
for the guard rails, and its guard gaps, are never used). Each model is pruned to half the channels of every
group (prune-l2, one shot), then recovered for the same number of steps, batch and learning rate, from the same
pruned weights, on the same training-side images:

* **distillation** (the default of ``--finetune``): the original labels every augmented view itself;
* **labels** (``--finetune-data``): Dice + cross-entropy on the true masks; a fifth of the images is held aside
  for early stopping on the guard-rail headroom (so it trains on fewer images than distillation sees);
* with ``--plain``, also **distillation, plain mean**: the loss averaged over every output position alike, as before
  the distillation became class-balanced (each class the original predicts in a batch weighing the same).

The table gives per-class Dice on the bundled held-out images (what the guard rails judge) for the original, the
pruned model and each recovery, and the seconds each took. Rerun it with::

    python benchmarks/finetune_labels.py --models brain-tissue-unet2d --steps 100 300 [--threads 2]
    python benchmarks/finetune_labels.py --models brain-tissue-unet3d --steps 60 200 --threads 1 [--patches 64]
    python benchmarks/finetune_labels.py --models brain-tissue-unet2d brain-tissue-unet3d --steps 100 --plain
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "scripts" / "zoo")]


def training_side(name: str, patches: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float images (N, 1, *spatial) in [0, 1] and int64 labels from the training side of the model's template:
    every 1.5 mm axial slice (2D), or ``patches`` random 48^3 patches (3D, as the training script draws them)."""
    import _common as C

    t0, t1 = C.HELDOUT_Z_MM[0] - C.GAP_MM, C.HELDOUT_Z_MM[1] + C.GAP_MM
    if name == "brain-tissue-unet2d":
        import train_brain_tissue_unet2d as T

        images, labels = T.slices(1.5, lambda z: z < t0 or z > t1)
    elif name == "brain-tissue-unet3d":
        import train_brain_tissue_unet3d as T

        images, labels = T.sample(np.random.default_rng(seed), T.training_parts(*T.volume()), patches,
                                  augment=False)
    else:
        raise SystemExit(f"no training-side labels for {name}")
    return C.from_uint8(images), labels.astype(np.int64)


def per_class_dice(model, ref) -> dict[str, float]:
    import torch

    from medexport.evaluation import evaluate

    images, labels = ref.heldout()
    with torch.no_grad():
        report, _ = evaluate(lambda x: model(torch.from_numpy(x)).numpy(), images, labels, task=ref.task,
                             classes=list(ref.classes), roi_size=ref.roi_size, hd95=False, n_boot=0)
    return {name: 100 * metrics["dice"].value for name, metrics in report.per_class.items()}


def rows(name: str, steps_list: list[int], ratio: float, batch: int | None, patches: int,
         plain: bool = False) -> list[tuple]:
    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    from medexport.evaluation import GuardRails
    from medexport.evaluation.validation import LabelledData
    from medexport.finetune import DistillConfig, LabelledConfig, distill, finetune_on_labels
    from medexport.zoo import get_model

    ref = get_model(name)
    original = ref.build()
    pruned, _ = get_pass("prune-l2").apply(copy.deepcopy(original), tuple(ref.input_shape), PruneConfig(ratio=ratio))
    images, labels = training_side(name, patches)
    data = LabelledData(images, labels, ref.task, ref.classes, "training side", roi_size=ref.roi_size)
    out = [(name, "original", "-", per_class_dice(original, ref), None, None),
           (name, f"prune-l2 {ratio}", 0, per_class_dice(pruned, ref), None, None)]
    classes = " | ".join(out[0][3])
    print(f"| model | recovery | steps | training images | {classes} (Dice %) | worst class | seconds |",
          "|---|---|---:|---:|" + "---:|" * (len(out[0][3]) + 2), *(_line(row) for row in out), sep="\n", flush=True)
    for steps in steps_list:
        start = time.perf_counter()
        tuned, _ = distill(copy.deepcopy(pruned), original, images, DistillConfig(steps=steps, batch=batch))
        out.append((name, "distillation", steps, per_class_dice(tuned, ref), time.perf_counter() - start, len(images)))
        if plain:
            start = time.perf_counter()
            tuned, _ = distill(copy.deepcopy(pruned), original, images,
                               DistillConfig(steps=steps, batch=batch, balanced=False))
            out.append((name, "distillation, plain mean", steps, per_class_dice(tuned, ref),
                        time.perf_counter() - start, len(images)))
        start = time.perf_counter()
        tuned, record = finetune_on_labels(copy.deepcopy(pruned), original, data,
                                           LabelledConfig(steps=steps, batch=batch), GuardRails())
        kept = f", kept step {record.early_stopping['best_step']} of {record.steps}"
        out.append((name, f"labels{kept}", steps, per_class_dice(tuned, ref), time.perf_counter() - start,
                    record.images))
        print(*(_line(row) for row in out[-(3 if plain else 2):]), sep="\n", flush=True)
    return out


def _line(row: tuple) -> str:
    name, method, steps, dice, seconds, n = row
    cells = " | ".join(f"{v:.1f}" for v in dice.values())
    return (f"| {name} | {method} | {steps} | {'-' if n is None else n} | {cells} | {min(dice.values()):.1f} | "
            f"{'-' if seconds is None else f'{seconds:.0f}'} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["brain-tissue-unet2d"])
    parser.add_argument("--steps", nargs="+", type=int, default=[100, 300])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=None, help="default: 8 images (2D), 2 volumes (3D)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patches", type=int, default=24, help="3D: training-side 48^3 patches drawn")
    parser.add_argument("--plain", action="store_true", help="also distil with the plain (unbalanced) mean loss")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.models:
        rows(name, args.steps, args.ratio, args.batch, args.patches, args.plain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
