"""Train brain-region-alexnet: which lobe (AAL group) a 64x64 axial T1 patch of Colin27 is centred on.

Run ``python scripts/zoo/train_brain_region_alexnet.py`` to retrain from the offline mricron
Colin27 T1 and AAL atlas and rewrite the weights, the bundled held-out data and the model card.
"""
from __future__ import annotations

import numpy as np

import _common as C

from medexport.zoo import get_model

REF = get_model("brain-region-alexnet")
PATCH = 64
GAP_MM = 4.0          # patch centres at least this far from the midline
PER_CLASS_TEST = 100
PER_CLASS_CALIB = 8
STEPS = 500
BATCH = 64

# AAL region numbers (aal.nii.txt) of each class, in REF.classes order. Insula, cingulum,
# hippocampus, parahippocampal gyrus and amygdala (29-42: limbic, no single lobe) are left out.
GROUPS = {
    "frontal": range(1, 29),        # precentral .. rectus
    "parietal": range(57, 71),      # postcentral .. paracentral lobule
    "temporal": [55, 56, *range(79, 91)],  # fusiform, Heschl, temporal gyri and poles
    "occipital": range(43, 55),     # calcarine .. inferior occipital
    "deep_grey": range(71, 79),     # caudate, putamen, pallidum, thalamus
    "cerebellum": range(91, 117),   # cerebellar hemispheres and vermis
}

CARD = """# brain-region-alexnet

**Task.** 2D classification: which brain region an axial 64 x 64 mm T1 patch is centred on,
one of {classes} (AAL atlas regions grouped by lobe).

**Architecture.** AlexNet-style (the backbone of the HSC spatio-channel low-rank compression
paper), scaled down: 5 convolutions (5x5 then 3x3; 24, 48, 64, 64, 48 channels; BatchNorm + ReLU;
max-pools after conv 1, 2 and 5) and 3 fully connected layers (3072 -> 128 -> 64 -> 6, ReLU,
dropout 0.3 in training); {params} parameters, float32 state_dict of {size_kb} kB.
Factory: `medexport.zoo.architectures:brain_region_alexnet`.

**Input.** `(N, 1, 64, 64)` float32: an axial patch at 1 mm, intensities in [0, 1], showing one
hemisphere only (the other hemisphere's pixels are 0). Output: `(N, 6)` logits.

**Data and licences.** Colin27 (`ch2bet.nii.gz`, skull-stripped T1 of one real subject,
27 averaged scans, 1 mm, MNI space) and the AAL atlas (`aal.nii.gz`, 116 regions, names in
`aal.nii.txt`; Tzourio-Mazoyer et al., NeuroImage 2002) from Debian's `mricron-data` package
(`/usr/share/mricron/templates`), BSD-3-clause per Debian's copyright file (Chris Rorden); the
Colin27 brain is copyright McConnell Brain Imaging Centre, MNI, redistributable with its notice.
Only derived 64 x 64 uint8 patches and their class numbers are bundled, not the atlas.

**Labels.** The class of the AAL region under the patch centre: {groups}.
Insula, cingulum, hippocampus, parahippocampal gyrus and amygdala (AAL 29-42) have no single
lobe and are not used.

**Preprocessing (already applied to the bundled data).** Intensity divided by the 99.5th
percentile of brain voxels and clipped to [0, 1] (no z-scoring), stored as uint8 codes
`round(255 x)`; `heldout()` returns `code / 255`. Patches are zero-padded at the volume edge.

**Split.** By hemisphere of one subject: training patches are cut from the LEFT hemisphere image
(right-hemisphere pixels set to 0), held-out patches from the RIGHT hemisphere image (left set to 0),
centres at least {gap:g} mm from the midline, so no held-out pixel or label was ever seen in
training. Colin27 is a real, asymmetric brain, but it is one subject: the held-out hemisphere is
not a new person. Held-out: {n_test} patches, {per_class} per class drawn at random (seed 0),
so accuracy equals balanced accuracy. Calibration images (`calibration()`, {n_calib} patches)
come from the training hemisphere.

**Training.** {steps} Adam steps (lr 1e-3, cosine decay, weight decay 1e-4), batches of {batch}
patches with classes drawn uniformly (balanced whatever the region sizes), cross-entropy;
augmentation: left-right flips (a left-hemisphere patch flipped looks like a right one),
intensity gamma 0.8-1.25 and gain 0.9-1.1. Training time: {training}.

**Held-out metrics** (bootstrap over patches, 1000 resamples, mean ± SE):

{metrics}

**Limitations.** One subject (Colin27) at 1 mm in MNI space: the model reads position from
anatomy, so it will not transfer to scans in native space, other resolutions or other
contrasts; nearby patches overlap, so the SEs are optimistic. A reference classifier for
testing compression and deployment fidelity, not for clinical use.
"""


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colin27 as uint8 codes, class map (-1 = unused), and the x (mm) of each sagittal index."""
    import nibabel as nib

    t1 = nib.load(C.MRICRON / "ch2bet.nii.gz")
    aal = np.asarray(nib.load(C.MRICRON / "aal.nii.gz").dataobj).astype(np.int32)
    img = t1.get_fdata()
    img = C.to_uint8(img / np.percentile(img[img > 0], 99.5))
    classes = np.full(aal.shape, -1, np.int8)
    for c, name in enumerate(REF.classes):
        classes[np.isin(aal, list(GROUPS[name]))] = c
    x_mm = t1.affine[0, 3] + np.arange(img.shape[0]) * t1.affine[0, 0]
    return img, classes, x_mm


def hemisphere(img, classes, x_mm, side: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The image with the other hemisphere zeroed (padded for patch cutting), and per-class centres."""
    keep = x_mm < 0 if side == "left" else x_mm > 0
    centre_ok = x_mm <= -GAP_MM if side == "left" else x_mm >= GAP_MM
    half = img * keep[:, None, None].astype(np.uint8)
    h = PATCH // 2
    padded = np.pad(half, ((h, h), (h, h), (0, 0)))
    centres = [np.argwhere((classes == c) & centre_ok[:, None, None]) for c in range(len(REF.classes))]
    return padded, centres


def patches(padded: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, 1, 64, 64) axial patches centred on ``centres`` (i, j, k) of the unpadded grid."""
    return np.stack([padded[i:i + PATCH, j:j + PATCH, k][None] for i, j, k in centres])


def balanced(rng, centres: list[np.ndarray], per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` distinct random centres of each class, and their class numbers."""
    picks = [cs[rng.choice(len(cs), per_class, replace=False)] for cs in centres]
    return np.concatenate(picks), np.repeat(np.arange(len(centres)), per_class).astype(np.uint8)


def train(padded, centres):
    import torch

    model = REF.create()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(C.SEED)
    model.train()
    for step in range(STEPS):
        y = rng.integers(0, len(centres), BATCH)
        picks = np.stack([centres[c][rng.integers(len(centres[c]))] for c in y])
        x = C.from_uint8(patches(padded, picks))
        for i in range(BATCH):
            if rng.random() < 0.5:
                x[i] = x[i, :, ::-1]
            x[i] = np.clip(x[i] ** rng.uniform(0.8, 1.25) * rng.uniform(0.9, 1.1), 0.0, 1.0)
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == STEPS - 1:
            print(f"step {step:4d} loss {loss.item():.4f}", flush=True)
    return model.eval()


def main() -> None:
    args = C.parse_args(__doc__)
    C.setup_torch()
    img, classes, x_mm = load()
    left, left_centres = hemisphere(img, classes, x_mm, "left")
    right, right_centres = hemisphere(img, classes, x_mm, "right")
    seconds = None
    if not args.card_only:
        timer = C.Timer()
        model = train(left, left_centres)
        seconds = timer.seconds
        test_centres, test_labels = balanced(np.random.default_rng(C.SEED), right_centres, PER_CLASS_TEST)
        calib_centres, _ = balanced(np.random.default_rng(C.SEED + 1), left_centres, PER_CLASS_CALIB)
        C.save_weights(REF, model)
        C.save_data(REF, patches(right, test_centres), test_labels, patches(left, calib_centres))
    model = REF.build()
    groups = "; ".join(f"{name} = AAL {_ranges(GROUPS[name])}" for name in REF.classes)
    body = CARD.replace("{params}", f"{sum(p.numel() for p in model.parameters()):,}")
    body = body.replace("{size_kb}", f"{REF.weights_path().stat().st_size / 1024:.0f}")
    body = body.format(classes=", ".join(REF.classes), groups=groups, gap=GAP_MM,
                       n_test=len(REF.heldout()[1]), per_class=PER_CLASS_TEST,
                       n_calib=len(REF.calibration()), steps=STEPS, batch=BATCH,
                       training="{training}", metrics="{metrics}")
    C.write_card(REF, body, seconds)


def _ranges(ids) -> str:
    ids = sorted(ids)
    runs, start = [], ids[0]
    for a, b in zip(ids, ids[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}-{a}" if a != start else f"{a}")
            start = b
    return ", ".join(runs)


if __name__ == "__main__":
    main()
