"""Train brain-tissue-unet2d: axial grey/white-matter segmentation of the MNI152 T1 at 1.5 mm.

Run ``python scripts/zoo/train_brain_tissue_unet2d.py`` to retrain from the offline nilearn
MNI152 template and rewrite the weights, the bundled held-out data and the model card.
"""
from __future__ import annotations

import numpy as np

import _common as C

from medexport.zoo import get_model

REF = get_model("brain-tissue-unet2d")
SIZE = 128
STEPS = 600
BATCH = 12

CARD = """# brain-tissue-unet2d

**Task.** 2D semantic segmentation of brain tissue on axial T1-weighted MRI slices:
background (CSF and everything outside the brain) / grey matter / white matter.
The default model of `medexport build`.

**Architecture.** MONAI `UNet` (spatial_dims=2), channels (32, 64, 128, 256), strides (2, 2, 2),
plain Conv-BN-ReLU blocks (`num_res_units=0`: no residual Add, which kept OpenVINO's INT8
gain near 1.2x; 32-256 rather than 16-128 channels because the wider net gains about 3x from
INT8 on OpenVINO instead of 1.7x, and leaves room for pruning), BatchNorm + ReLU (both fold or fuse on every backend; no InstanceNorm or PReLU); {params} parameters, state_dict stored in float16 ({size_kb} kB, to keep the
bundled weights small; the card's metrics are measured on these float16-stored weights).
Factory: `medexport.zoo.architectures:brain_tissue_unet2d`.

**Input.** `(N, 1, 128, 128)` float32, one axial slice at 1.5 mm x 1.5 mm in-plane
(192 mm field of view centred on the brain), intensities in [0, 1]. Output: `(N, 3, 128, 128)` logits.

**Data and licences.** MNI152 ICBM 2009a T1 template and its grey/white-matter probability maps
as shipped in the nilearn wheel (`nilearn.datasets.load_mni152_template/gm/wm`, resolution 1 mm;
nilearn BSD-3, template copyright McConnell Brain Imaging Centre, MNI, redistributable with its
notice). **The MNI152 template is an average of 152 brains, not one patient**: it is smoother
and cleaner than any real scan, so these numbers are an upper bound for real single-subject
MRI. The nilearn copy is also exactly left-right symmetric, so a hemisphere split would leak.

**Labels.** The probability maps are resampled (trilinear) to the 1.5 mm grid; a pixel is grey
(white) matter when its probability beats both the other tissue and `1 - p_gm - p_wm`.

**Preprocessing (already applied to the bundled data).** Resampled to 1.5 mm (trilinear); the
template's intensities are already in [0, 1] (skull-stripped, rescaled by nilearn) and are
stored as uint8 codes `round(255 x)`; `heldout()` returns `code / 255`. No z-scoring.

**Split.** Held out: the axial slab MNI z in [{z0:g}, {z1:g}] mm ({n_heldout} slices at 1.5 mm,
through the lateral ventricles and basal ganglia). Training: slices with z < {t0:g} mm or
z > {t1:g} mm (a {gap:g} mm guard gap on each side), sampled every 0.5 mm for more distinct
interpolations ({n_train} slices). One template, so held-out means another slab, not another
subject; neighbouring slices are correlated, so the bootstrap SEs (resampling slices) are optimistic.
Calibration images (`calibration()`, {n_calib} slices) come from the training side only.

**Training.** {steps} Adam steps (lr 2e-3, cosine decay), batch {batch}, Dice + cross-entropy loss,
augmentation: left-right flips, shifts of up to 8 px, intensity gamma 0.8-1.25 and gain 0.9-1.1.
Training time: {training}.

**Held-out metrics** (bootstrap over slices, 1000 resamples, mean ± SE; HD95 in mm):

{metrics}

**Limitations.** Trained on one average template: expect lower Dice on real scans (noise, bias
field, atrophy, lesions, other contrasts); no skull stripping is done by the model, inputs must
be skull-stripped T1 in [0, 1] at about 1.5 mm. A reference model for testing deployment
fidelity, not for clinical use.
"""


def slices(zoom_z: float, keep) -> tuple[np.ndarray, np.ndarray]:
    """Axial slices (N, 1, 128, 128) uint8 and labels (N, 128, 128) at ``keep(z_mm)`` that hold brain."""
    image, labels, z_mm = C.mni152((1.5, 1.5, zoom_z))
    x0, y0 = _crop_origin(labels)
    idx = [k for k in range(image.shape[2]) if keep(z_mm[k]) and labels[:, :, k].any()]
    img = np.stack([_crop(image[:, :, k], x0, y0) for k in idx])[:, None]
    lab = np.stack([_crop(labels[:, :, k], x0, y0) for k in idx])
    return img, lab


def _crop_origin(labels: np.ndarray) -> tuple[int, int]:
    """Top-left of a 128x128 window centred on the brain's in-plane bounding box."""
    xs, ys = np.nonzero(labels.any(axis=2))
    return (xs.min() + xs.max() + 1) // 2 - SIZE // 2, (ys.min() + ys.max() + 1) // 2 - SIZE // 2


def _crop(a: np.ndarray, x0: int, y0: int) -> np.ndarray:
    out = np.zeros((SIZE, SIZE), a.dtype)
    xs, ys = slice(max(x0, 0), min(x0 + SIZE, a.shape[0])), slice(max(y0, 0), min(y0 + SIZE, a.shape[1]))
    out[xs.start - x0:xs.stop - x0, ys.start - y0:ys.stop - y0] = a[xs, ys]
    return out


def augment(rng: np.random.Generator, img: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random flip, shift, gamma and gain of a batch (float images in [0, 1])."""
    img, lab = img.copy(), lab.copy()
    for i in range(len(img)):
        if rng.random() < 0.5:
            img[i], lab[i] = img[i, :, ::-1], lab[i, ::-1]
        dx, dy = rng.integers(-8, 9, size=2)
        img[i] = np.roll(img[i], (dx, dy), axis=(1, 2))
        lab[i] = np.roll(lab[i], (dx, dy), axis=(0, 1))
        img[i] = np.clip(img[i] ** rng.uniform(0.8, 1.25) * rng.uniform(0.9, 1.1), 0.0, 1.0)
    return img, lab


def train(img: np.ndarray, lab: np.ndarray):
    import torch
    from monai.losses import DiceCELoss

    model = REF.create()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(C.SEED)
    images = C.from_uint8(img)
    model.train()
    for step in range(STEPS):
        pick = rng.integers(0, len(images), BATCH)
        x, y = augment(rng, images[pick], lab[pick])
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y[:, None].astype(np.int64)))
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
    z0, z1 = C.HELDOUT_Z_MM
    t0, t1 = z0 - C.GAP_MM, z1 + C.GAP_MM
    test_img, test_lab = slices(1.5, lambda z: z0 <= z <= z1)
    train_img, train_lab = slices(0.5, lambda z: z < t0 or z > t1)
    seconds = None
    if not args.card_only:
        timer = C.Timer()
        model = train(train_img, train_lab)
        seconds = timer.seconds
        calib_img, _ = slices(1.5, lambda z: z < t0 or z > t1)
        pick = np.linspace(0, len(calib_img) - 1, 32).round().astype(int)
        C.save_weights(REF, model, half=True)
        C.save_data(REF, test_img, test_lab, calib_img[pick])
    model = REF.build()
    body = CARD.replace("{params}", f"{sum(p.numel() for p in model.parameters()):,}")
    body = body.replace("{size_kb}", f"{REF.weights_path().stat().st_size / 1024:.0f}")
    body = body.format(z0=z0, z1=z1, t0=t0, t1=t1, gap=C.GAP_MM, n_heldout=len(test_img),
                       n_train=len(train_img), n_calib=len(REF.calibration()), steps=STEPS, batch=BATCH,
                       training="{training}", metrics="{metrics}")
    C.write_card(REF, body, seconds)


if __name__ == "__main__":
    main()
