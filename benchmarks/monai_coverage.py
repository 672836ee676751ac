"""Every MONAI network that takes 2D or 3D images, through the chain a user runs: export, build on ONNX Runtime
and OpenVINO (FP32 and INT8 calibrated on real images), ``prune-l2 --ratio 0.5`` and ``tucker --budget 3x``.

    python benchmarks/monai_coverage.py [--nets UNet-2d,VNet-3d] [--cells export,ort-fp32,...] [--timeout 900]
                                        [--json coverage.json]

Each network is built with small settings (random weights, seed 0: coverage is about whether the chain holds,
not accuracy) and runs in its own process, so one network's crash or hang cannot hide another's result. Every
cell is ``pass``, ``refused`` (a MedexportError: the one line a user would read) or ``FAILED`` (anything else:
a bug). Passing cells show the share of torch's argmax decisions the artifact kept on the parity images (and the
lowest class Dice between the two masks of a segmentation): FP32 parity requires 99.9%; for INT8 it is what
calibration on real images cost, before any guard rail (the networks have random weights and no labels).

Calibration uses real images: 2D networks read slices of the pyradiomics MRI and CT scans in
``../shared/data/pyradiomics`` (the ``*_image.nrrd`` files), 3D networks 40 crops of the same scans saved as
``.npy``, as a user saves patches. MONAI's transformer networks need ``einops`` (``pip install einops``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANS = ROOT.parent / "shared" / "data" / "pyradiomics"
NETS_MODULE = "monai.networks.nets"

# name: (class, constructor kwargs, input shape, what it exercises)
NETS: dict[str, tuple[str, dict, str, str]] = {
    "UNet-2d": ("UNet", dict(spatial_dims=2, in_channels=1, out_channels=3, channels=[8, 16, 32, 64],
                             strides=[2, 2, 2], num_res_units=2), "1x1x64x64", "instance norm, residual units"),
    "UNet-3d": ("UNet", dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[8, 16, 32], strides=[2, 2],
                             num_res_units=1), "1x1x32x32x32", "instance norm, residual units"),
    "BasicUNet-2d": ("BasicUNet", dict(spatial_dims=2, in_channels=1, out_channels=2, features=[8, 8, 16, 32, 64, 8]),
                     "1x1x64x64", "instance norm, concat skips"),
    "BasicUNet-3d": ("BasicUNet", dict(spatial_dims=3, in_channels=1, out_channels=2, features=[8, 8, 16, 32, 64, 8]),
                     "1x1x32x32x32", "instance norm, concat skips"),
    "BasicUNetPlusPlus-2d": ("BasicUNetPlusPlus", dict(spatial_dims=2, in_channels=1, out_channels=2,
                                                       features=[8, 8, 16, 32, 64, 8]),
                             "1x1x64x64", "nested skips, list output"),
    "AttentionUnet-2d": ("AttentionUnet", dict(spatial_dims=2, in_channels=1, out_channels=2,
                                               channels=[8, 16, 32, 64], strides=[2, 2, 2]),
                         "1x1x64x64", "batch norm, attention gates"),
    "DynUNet-3d": ("DynUNet", dict(spatial_dims=3, in_channels=1, out_channels=2, kernel_size=[3, 3, 3],
                                   strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[8, 16, 32]),
                   "1x1x32x32x32", "instance norm, nnU-Net style"),
    "SegResNet-3d": ("SegResNet", dict(spatial_dims=3, init_filters=8, in_channels=1, out_channels=2),
                     "1x1x32x32x32", "group norm, residual adds"),
    "SegResNetDS-3d": ("SegResNetDS", dict(spatial_dims=3, init_filters=8, in_channels=1, out_channels=2),
                       "1x1x32x32x32", "group norm, deep supervision"),
    "SegResNetVAE-3d": ("SegResNetVAE", dict(input_image_size=[32, 32, 32], spatial_dims=3, init_filters=8,
                                             in_channels=1, out_channels=2),
                        "1x1x32x32x32", "group norm, returns (x, None)"),
    "VNet-3d": ("VNet", dict(spatial_dims=3, in_channels=1, out_channels=2), "1x1x32x32x32",
                "batch norm, 5x5x5 convs, transposed convs"),
    "HighResNet-2d": ("HighResNet", dict(spatial_dims=2, in_channels=1, out_channels=2), "1x1x64x64",
                      "batch norm, dilated convs"),
    "HighResNet-3d": ("HighResNet", dict(spatial_dims=3, in_channels=1, out_channels=2), "1x1x32x32x32",
                      "batch norm, dilated convs"),
    "UNETR-3d": ("UNETR", dict(in_channels=1, out_channels=2, img_size=32, feature_size=8, hidden_size=96,
                               mlp_dim=192, num_heads=4, spatial_dims=3), "1x1x32x32x32", "ViT encoder, layer norm"),
    "SwinUNETR-3d": ("SwinUNETR", dict(in_channels=1, out_channels=2, feature_size=12, spatial_dims=3,
                                       depths=[1, 1, 1, 1], num_heads=[3, 3, 3, 3]),
                     "1x1x64x64x64", "shifted-window attention"),
    "MedNeXt-3d": ("MedNeXt", dict(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8,
                                   blocks_down=[1, 1, 1, 1], blocks_bottleneck=1, blocks_up=[1, 1, 1, 1]),
                   "1x1x32x32x32", "group norm, depthwise 7x7x7 convs"),
    "FlexibleUNet-2d": ("FlexibleUNet", dict(in_channels=1, out_channels=2, backbone="efficientnet-b0",
                                             pretrained=False, spatial_dims=2),
                        "1x1x64x64", "EfficientNet encoder, swish, SE"),
    "Quicknat-2d": ("Quicknat", dict(num_classes=2, num_channels=1, num_filters=16), "1x1x64x64",
                    "batch norm, max-unpooling, squeeze-excitation"),
    "LocalNet-3d": ("LocalNet", dict(spatial_dims=3, in_channels=1, num_channel_initial=8, extract_levels=[0, 1, 2],
                                     out_channels=3), "1x1x32x32x32", "registration net, batch norm"),
    "AutoEncoder-2d": ("AutoEncoder", dict(spatial_dims=2, in_channels=1, out_channels=1, channels=[8, 16, 32],
                                           strides=[2, 2, 2]), "1x1x64x64", "image to image, one output channel"),
    "VarAutoEncoder-2d": ("VarAutoEncoder", dict(spatial_dims=2, in_shape=[1, 64, 64], out_channels=1, latent_size=16,
                                                 channels=[8, 16, 32], strides=[2, 2, 2]),
                          "1x1x64x64", "tuple of 4 outputs"),
    "HoVerNet-2d": ("HoVerNet", dict(mode="fast", in_channels=3, out_classes=3, pretrained_url=None),
                    "1x3x256x256", "pathology, dict output, valid padding"),
    "DenseNet121-2d": ("DenseNet121", dict(spatial_dims=2, in_channels=1, out_channels=3), "1x1x64x64",
                       "classifier, batch norm, dense concat"),
    "ResNet18-2d": ("resnet18", dict(spatial_dims=2, n_input_channels=1, num_classes=3), "1x1x64x64",
                    "classifier, batch norm, residual adds"),
    "ResNet10-3d": ("resnet10", dict(spatial_dims=3, n_input_channels=1, num_classes=3), "1x1x32x32x32",
                    "3D classifier"),
    "EfficientNetBN-2d": ("EfficientNetBN", dict(model_name="efficientnet-b0", pretrained=False, spatial_dims=2,
                                                 in_channels=1, num_classes=3),
                          "1x1x64x64", "classifier, depthwise convs, SE"),
    "SEResNet50-2d": ("SEResNet50", dict(spatial_dims=2, in_channels=1, num_classes=3, pretrained=False),
                      "1x1x64x64", "classifier, squeeze-excitation"),
    "ViT-2d": ("ViT", dict(in_channels=1, img_size=64, patch_size=16, hidden_size=96, mlp_dim=192, num_layers=2,
                           num_heads=4, classification=True, num_classes=3, spatial_dims=2),
               "1x1x64x64", "transformer classifier, (x, hidden states)"),
    "ViTAutoEnc-3d": ("ViTAutoEnc", dict(in_channels=1, img_size=32, patch_size=16, hidden_size=96, mlp_dim=192,
                                         num_layers=2, num_heads=4, spatial_dims=3),
                      "1x1x32x32x32", "transformer, (x, hidden states)"),
    "Classifier-2d": ("Classifier", dict(in_shape=[1, 64, 64], classes=3, channels=[8, 16, 32], strides=[2, 2, 2]),
                      "1x1x64x64", "small classifier"),
}

# Network classes of monai.networks.nets left out, and why (aliases such as Unet/BasicUnet are the same classes).
LEFT_OUT = {
    "DAF3D": "needs torchvision",
    "DiNTS, TopologyInstance, TopologySearch, TopologyConstruction": "need a searched architecture code",
    "GlobalNet, RegUNet, VoxelMorph, VoxelMorphUNet": "registration: two images in (LocalNet stands for them)",
    "AHNet": "its 3D form needs 2D-pretrained weights loaded in; random weights make it a ResNet-like 3D net",
    "DenseNet169/201/264, SEResNet101/152, SEResNext50/101, SENet154, resnet34-200": "larger members of the "
                                                                                      "families above",
    "EfficientNetBNFeatures, EfficientNetEncoder, ResNetFeatures, ResNetEncoder, NetAdapter, TorchVisionFCModel":
        "feature extractors and adapters of the classifiers above (TorchVisionFCModel needs torchvision)",
    "DiffusionModelUNet, ControlNet, SPADEDiffusionModelUNet, SPADEAutoencoderKL, SPADENet": "generative: need "
                                                                                            "timesteps or a "
                                                                                            "segmentation map in",
    "AutoencoderKL, VQVAE, MaskedAutoEncoderViT, Generator, Discriminator, Critic, PatchDiscriminator, "
    "MultiScalePatchDiscriminator, Regressor": "generative or adversarial training parts, not deployed as readers",
    "Transchex, MultiModal, DecoderOnlyTransformer, MILModel, NaViT, VISTA3D, HyenaNDUNETR": "text, bags, tokens or "
                                                                                           "prompts in, not images",
    "FullyConnectedNet, VarFullyConnectedNet": "vectors in, not images",
}

CELLS = ("export", "ort-fp32", "ov-fp32", "ort-int8", "ov-int8", "prune-l2 0.5", "tucker 3x")


def config_for(name: str, cell: str, out: Path, calib: dict[int, Path]):
    """The BuildConfig a user's command line gives for this network and cell."""
    from medexport.loading import ModelSpec
    from medexport.pipeline import (BuildConfig, CompressionConfig, DataConfig, LatencyConfig, ParityConfig,
                                    QuantizationConfig)

    cls, kwargs, shape, _ = NETS[name]
    dims = len(shape.split("x")) - 2
    target = {"ort": "onnxruntime", "ov": "openvino"}.get(cell.split("-")[0])
    precision = cell.split("-")[1] if target else "fp32"
    compression = CompressionConfig()
    if cell.startswith("prune"):
        compression = CompressionConfig.from_flags("prune-l2", {"--ratio": 0.5})
    elif cell.startswith("tucker"):
        compression = CompressionConfig.from_flags("tucker", {"--budget": "3x"})
    return BuildConfig(model=ModelSpec(model=f"{NETS_MODULE}:{cls}", model_kwargs=kwargs, input_shape=shape,
                                       name=name),
                       out_dir=out, target=target, validate=False, latency=LatencyConfig(enabled=False),
                       parity=ParityConfig(samples=4), compression=compression,
                       quantization=QuantizationConfig(precision=precision),
                       data=DataConfig(calib=str(calib[dims]), calib_samples=32))


def decision(parity: dict | None) -> str:
    """The share of the reference's argmax decisions an artifact kept, as a parity dict records it ('' if none)."""
    level = (parity or {}).get("decisions")
    if not level:
        return ""
    text = f"{100 * level['agreement']:.2f}% kept"
    if level.get("dice"):
        text += f", Dice >= {min(level['dice'].values()):.3f}"
    return text


def run_cell(name: str, cell: str, calib: dict[int, Path]) -> dict:
    """One cell in this process: pass / refused / FAILED with the one line and the facts worth a column."""
    import torch

    from medexport.errors import MedexportError
    from medexport.pipeline import run_build
    from medexport.pipeline.verbs import run_compress, run_export

    torch.manual_seed(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config = config_for(name, cell, Path(tmp) / "out", calib)
            if cell == "export":
                facts = run_export(config)
                parity = facts.get("parity")
            elif config.compression.chain:
                facts = run_compress(config)
                parity = facts.get("onnx_parity")
            else:
                facts = run_build(config).to_dict()
                parity = facts.get("backend_parity")
            result = {"status": "pass", "detail": decision(parity)}
            if config.compression.chain:
                result["detail"] = _reduction(facts)
        except MedexportError as exc:
            result = {"status": "refused", "detail": str(exc).splitlines()[0]}
        except Exception as exc:  # noqa: BLE001 - a crash is what this benchmark exists to find
            result = {"status": "FAILED", "detail": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                      "traceback": traceback.format_exc(limit=-3)}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _reduction(facts: dict) -> str:
    """How many times fewer MACs the compressed model has, from the compression record."""
    ratio = (facts.get("compression") or {}).get("ratio")
    return f"{ratio:.1f}x fewer MACs" if ratio else ""


def calibration_folders(root: Path) -> dict[int, Path]:
    """Real calibration images: the pyradiomics scans for 2D (sliced by the reader), 40 .npy crops of them for 3D."""
    import numpy as np
    import SimpleITK as sitk

    scans = sorted(SCANS.glob("*_image.nrrd"))
    if not scans:
        sys.exit(f"no scans in {SCANS}: this benchmark calibrates on real images (see ../shared/data/DATA.md)")
    two, three = root / "2d", root / "3d"
    two.mkdir(parents=True, exist_ok=True)
    three.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for scan in scans:
        (two / scan.name).unlink(missing_ok=True)
        (two / scan.name).symlink_to(scan)
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(scan))).astype(np.float32)
        crop = [min(s, c) for s, c in zip(volume.shape, (32, 96, 96))]
        for i in range(8):
            z, y, x = (int(rng.integers(0, s - c + 1)) for s, c in zip(volume.shape, crop))
            np.save(three / f"{scan.stem}_{i}.npy", volume[z:z + crop[0], y:y + crop[1], x:x + crop[2]])
    return {2: two, 3: three}


def worker(name: str, cells: list[str], calib: dict[int, Path]) -> None:
    """Run one network's cells and print one JSON line per cell (the parent reads them)."""
    import warnings

    warnings.simplefilter("ignore")
    for cell in cells:
        print("CELL " + json.dumps({"net": name, "cell": cell, **run_cell(name, cell, calib)}), flush=True)


def run_network(name: str, cells: list[str], calib_root: Path, timeout: float) -> list[dict]:
    """One network's cells in a child process; a crash or a hang is a FAILED cell, not a lost run."""
    cmd = [sys.executable, __file__, "--worker", name, "--cells", ",".join(cells), "--calib-root", str(calib_root)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, err, code = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), "", None
    rows = [json.loads(line[5:]) for line in out.splitlines() if line.startswith("CELL ")]
    done = {row["cell"] for row in rows}
    for cell in cells:
        if cell not in done:
            why = f"timed out after {timeout:.0f} s" if code is None else f"process died (exit {code}): " + \
                (err.strip().splitlines() or [""])[-1][:160]
            rows.append({"net": name, "cell": cell, "status": "FAILED", "detail": why})
    return rows


def table(rows: list[dict], cells: list[str]) -> str:
    """Markdown: one row per network, one column per cell; refusals and failures spelled out below."""
    by = {(r["net"], r["cell"]): r for r in rows}
    nets = list(dict.fromkeys(r["net"] for r in rows))
    lines = ["| network | exercises | " + " | ".join(cells) + " |", "|---|---|" + "---|" * len(cells)]
    notes = []
    for net in nets:
        cols = []
        for cell in cells:
            r = by.get((net, cell))
            if r is None:
                cols.append("")
                continue
            mark = {"pass": "pass", "refused": f"refused [{len(notes) + 1}]", "FAILED": f"**FAILED** [{len(notes) + 1}]"}
            cols.append(mark[r["status"]] + (f" ({r['detail']})" if r["status"] == "pass" and r["detail"] else ""))
            if r["status"] != "pass":
                notes.append(f"[{len(notes) + 1}] {net} {cell}: {r['detail']}")
        lines.append(f"| {net} | {NETS[net][3]} | " + " | ".join(cols) + " |")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "refused", "FAILED")}
    lines.append("")
    lines.append(f"{len(nets)} networks, {len(rows)} cells: {counts['pass']} pass, {counts['refused']} refused, "
                 f"{counts['FAILED']} failed.")
    return "\n".join(lines + [""] + notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--timeout", type=float, default=900, help="seconds per network (all its cells)")
    parser.add_argument("--json", type=Path, help="also write every cell as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--calib-root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cells = args.cells.split(",")
    if args.worker:
        worker(args.worker, cells, {2: args.calib_root / "2d", 3: args.calib_root / "3d"})
        return
    unknown = [n for n in args.nets.split(",") if n not in NETS] + [c for c in cells if c not in CELLS]
    if unknown:
        sys.exit(f"unknown network or cell: {', '.join(unknown)} (networks: {', '.join(NETS)}; cells: {', '.join(CELLS)})")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calibration_folders(Path(tmp))
        for name in args.nets.split(","):
            start = time.perf_counter()
            rows += run_network(name, cells, Path(tmp), args.timeout)
            status = ", ".join(f"{r['cell']}: {r['status']}" for r in rows if r["net"] == name)
            print(f"{name} ({time.perf_counter() - start:.0f} s) {status}", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"torch {_version('torch')}, MONAI {_version('monai')}, ONNX Runtime {_version('onnxruntime')}, "
          f"OpenVINO {_version('openvino')}, {os.cpu_count()} CPUs\n")
    print(table(rows, cells))


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


if __name__ == "__main__":
    main()
