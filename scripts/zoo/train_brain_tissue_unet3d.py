"""Train brain-tissue-unet3d: grey/white-matter segmentation of the MNI152 T1 at 2 mm on 48^3 patches.

Run ``python scripts/zoo/train_brain_tissue_unet3d.py`` to retrain from the offline nilearn
MNI152 template and rewrite the weights, the bundled held-out data and the model card.
"""
from __future__ import annotations

import numpy as np

import _common as C

from medexport.zoo import get_model

REF = get_model("brain-tissue-unet3d")
PATCH = 48
CROP_XY = (80, 96)   # in-plane box around the brain at 2 mm
BLOCKS = 4           # held-out cases: the slab cut into anterior-to-posterior blocks
STEPS = 500
BATCH = 4

CARD = """# brain-tissue-unet3d

**Task.** 3D semantic segmentation of brain tissue in T1-weighted MRI at 2 mm isotropic:
background (CSF and everything outside the brain) / grey matter / white matter.

**Architecture.** MONAI `UNet` (spatial_dims=3), channels (32, 64, 128, 256), strides (2, 2, 2),
plain Conv-BN-ReLU blocks (`num_res_units=0`: no residual Add, which kept OpenVINO's INT8 gain
near 1.2x; wide channels because the INT8 gain grows with the work per layer, and a narrower
(16-128) net at 64^3 reached only 71% Dice), BatchNorm + ReLU (fold or fuse on every backend; no
InstanceNorm or PReLU); {params} parameters, state_dict stored in float16 ({size_kb} kB, to stay in
the package's size budget; loaded into the float32 model, and the metrics below are of those weights).
Factory: `medexport.zoo.architectures:brain_tissue_unet3d`.

**Input.** Patches `(N, 1, 48, 48, 48)` float32 at 2 mm (axes x, y, z of the MNI grid), intensities
in [0, 1]; larger volumes go through sliding-window inference (`roi_size=(48, 48, 48)`, overlap 0.25,
as in `medexport.evaluation.evaluate`). Output: `(N, 3, 48, 48, 48)` logits.

**Data and licences.** MNI152 ICBM 2009a T1 template and grey/white-matter probability maps from
the nilearn wheel (nilearn BSD-3; template copyright McConnell Brain Imaging Centre, MNI,
redistributable with its notice). **The MNI152 template is an average of 152 brains, not one
patient**: smoother and cleaner than any real scan, so these numbers are an upper bound for
real MRI. The nilearn copy is exactly left-right symmetric, so a hemisphere split would leak.

**Labels.** Probability maps resampled (trilinear) to 2 mm; a voxel is grey (white) matter when
its probability beats both the other tissue and `1 - p_gm - p_wm`.

**Preprocessing (already applied to the bundled data).** Resampled to 2 mm (trilinear); the
template's intensities are already in [0, 1] (skull-stripped, rescaled by nilearn), stored as
uint8 codes `round(255 x)`; `heldout()` returns `code / 255`. No z-scoring.

**Split.** Held out: the axial slab MNI z in [{z0:g}, {z1:g}] mm (the same slab the 2D model holds
out), an {sx} x {sy} x {sz} voxel box cut into {blocks} anterior-to-posterior blocks of
{bx} x {by} x {bz} voxels: the {blocks} cases of `heldout()`, each evaluated with sliding windows
(80 voxels along x take two 48-voxel windows). Training: patches drawn only from
z < {t0:g} mm and z > {t1:g} mm (a {gap:g} mm guard gap on each side); the network never saw
the held-out slab. One template, so held-out means another slab, not another subject; with only
{blocks} cases the bootstrap SEs are rough. Calibration images (`calibration()`, {n_calib}
patches) come from the training side.

**Training.** {steps} Adam steps (lr 2e-3, cosine decay), batch {batch} random 48^3 patches,
Dice + cross-entropy loss; augmentation: left-right flips, intensity gamma 0.8-1.25 and gain
0.9-1.1, and (half the patches) blanking everything outside a random sub-box (image 0, label
background) so that the zero padding of sliding windows at a cut edge is familiar.
Training time: {training}.

**Held-out metrics** (bootstrap over the {blocks} blocks, 1000 resamples, mean ± SE; HD95 in mm):

{metrics}

**Limitations.** Trained on one average template at 2 mm: expect lower Dice on real scans and
at other resolutions; inputs must be skull-stripped T1 in [0, 1]. A reference model for testing
deployment fidelity (3D convs, sliding windows), not for clinical use.
"""


def volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 2 mm image and labels cropped in-plane to CROP_XY around the brain, and z (mm) per slice."""
    image, labels, z_mm = C.mni152((2.0, 2.0, 2.0))
    xs, ys = np.nonzero(labels.any(axis=2))
    box = []
    for lo, hi, size, n in ((xs.min(), xs.max(), CROP_XY[0], image.shape[0]),
                            (ys.min(), ys.max(), CROP_XY[1], image.shape[1])):
        start = min(max((lo + hi + 1) // 2 - size // 2, 0), n - size)
        box.append(slice(start, start + size))
    return image[box[0], box[1]], labels[box[0], box[1]], z_mm


def heldout_blocks(image, labels, z_mm) -> tuple[np.ndarray, np.ndarray]:
    z0, z1 = C.HELDOUT_Z_MM
    ks = np.nonzero((z_mm >= z0) & (z_mm <= z1))[0]
    img, lab = image[:, :, ks], labels[:, :, ks]
    by = img.shape[1] // BLOCKS
    cut = [slice(b * by, (b + 1) * by) for b in range(BLOCKS)]
    return (np.stack([img[:, c][None] for c in cut]), np.stack([lab[:, c] for c in cut]))


def training_parts(image, labels, z_mm) -> list[tuple[np.ndarray, np.ndarray]]:
    """The parts below and above the held-out slab and its guard gaps, zero-padded by half a patch."""
    t0, t1 = C.HELDOUT_Z_MM[0] - C.GAP_MM, C.HELDOUT_Z_MM[1] + C.GAP_MM
    parts = []
    for keep in (z_mm < t0, z_mm > t1):
        ks = np.nonzero(keep)[0]
        pad = [(PATCH // 2, PATCH // 2)] * 3
        parts.append((np.pad(image[:, :, ks], pad), np.pad(labels[:, :, ks], pad)))
    return parts


def sample(rng, parts, n: int, augment: bool) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 48^3 patches (uint8 image, uint8 label) centred inside the real (unpadded) voxels."""
    imgs, labs = [], []
    h = PATCH // 2
    for _ in range(n):
        img, lab = parts[rng.integers(len(parts))]
        o = [rng.integers(0, s - 2 * h) for s in img.shape]   # patch origin in padded coordinates
        sl = tuple(slice(a, a + PATCH) for a in o)
        pi, pl = img[sl].copy(), lab[sl].copy()
        if augment and rng.random() < 0.5:
            lo = rng.integers(0, PATCH // 2, size=3)
            hi = lo + rng.integers(PATCH // 4, PATCH, size=3)
            keep = np.zeros_like(pl, dtype=bool)
            keep[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
            pi[~keep], pl[~keep] = 0, 0
        imgs.append(pi[None])
        labs.append(pl)
    return np.stack(imgs), np.stack(labs)


def train(parts):
    import torch
    from monai.losses import DiceCELoss

    model = REF.create()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(C.SEED)
    model.train()
    for step in range(STEPS):
        img, lab = sample(rng, parts, BATCH, augment=True)
        x = C.from_uint8(img)
        for i in range(BATCH):
            if rng.random() < 0.5:
                x[i], lab[i] = x[i, :, ::-1], lab[i, ::-1]
            x[i] = np.clip(x[i] ** rng.uniform(0.8, 1.25) * rng.uniform(0.9, 1.1), 0.0, 1.0)
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(lab[:, None].astype(np.int64)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == STEPS - 1:
            print(f"step {step:4d} loss {loss.item():.4f}", flush=True)
    return model.eval()


def main() -> None:
    args = C.parse_args(__doc__)
    C.setup_torch()
    image, labels, z_mm = volume()
    test_img, test_lab = heldout_blocks(image, labels, z_mm)
    parts = training_parts(image, labels, z_mm)
    seconds = None
    if not args.card_only:
        timer = C.Timer()
        model = train(parts)
        seconds = timer.seconds
        calib, _ = sample(np.random.default_rng(C.SEED + 1), parts, 8, augment=False)
        C.save_weights(REF, model, half=True)
        C.save_data(REF, test_img, test_lab, calib)
    model = REF.build()
    z0, z1 = C.HELDOUT_Z_MM
    body = CARD.replace("{params}", f"{sum(p.numel() for p in model.parameters()):,}")
    body = body.replace("{size_kb}", f"{REF.weights_path().stat().st_size / 1024:.0f}")
    sx, by, bz = test_img.shape[2:]
    body = body.format(z0=z0, z1=z1, t0=z0 - C.GAP_MM, t1=z1 + C.GAP_MM, gap=C.GAP_MM,
                       sx=sx, sy=by * BLOCKS, sz=bz, bx=sx, by=by, bz=bz, blocks=BLOCKS,
                       n_calib=len(REF.calibration()), steps=STEPS, batch=BATCH,
                       training="{training}", metrics="{metrics}")
    C.write_card(REF, body, seconds)


if __name__ == "__main__":
    main()
