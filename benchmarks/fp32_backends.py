"""FP32 latency and evaluation throughput: torch vs ONNX Runtime vs OpenVINO, side by side in one run.

    python benchmarks/fp32_backends.py [--rounds 5] [--threads N]

For each model: export once, build for ONNX Runtime and OpenVINO, then alternate the runtimes for
``--rounds`` rounds, every other round in reverse order (so machine noise hits all of them alike) and report the median of the per-round
medians at batch 1, plus evaluation throughput (held-out images per second through medexport's own
evaluation, sliding window included) for the reference models. Also times `medexport build` on the
default model. Prints markdown tables.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {
    "brain-tissue-unet2d (reference, 128x128)": ("brain-tissue-unet2d", None, None),
    "brain-tissue-unet3d (reference, patch)": ("brain-tissue-unet3d", None, None),
    "brain-region-alexnet (reference, 64x64)": ("brain-region-alexnet", None, None),
    "MONAI UNet 2D (InstanceNorm, PReLU) 256x256": (
        "monai.networks.nets:UNet",
        {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [16, 32, 64, 128, 256],
         "strides": [2, 2, 2, 2], "num_res_units": 2}, "1x1x256x256"),
    "MONAI UNet 3D (InstanceNorm, PReLU) 64^3": (
        "monai.networks.nets:UNet",
        {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [16, 32, 64, 128],
         "strides": [2, 2, 2], "num_res_units": 2}, "1x1x64x64x64"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    from medexport.bench import busy_warning, environment, interleaved_medians
    from medexport.exporter import export_onnx
    from medexport.loading import ModelSpec, load_model
    from medexport.runtimes.onnxruntime import Runner as OrtRunner
    from medexport.runtimes.openvino import Builder as OvBuilder, Runner as OvRunner
    from medexport.runtimes.torch import Runner as TorchRunner
    from medexport.zoo.samples import real_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    env = environment()
    print(f"machine: {env['cpu']}, {env['logical_cores']} logical cores; versions {env['versions']}\n")
    latency_rows, throughput_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (model, kwargs, shape) in MODELS.items():
            spec = ModelSpec(model=model, model_kwargs=kwargs or {}, input_shape=shape)
            try:
                loaded = load_model(spec)
            except Exception as exc:  # noqa: BLE001 - a missing reference model is reported, not fatal
                print(f"skipping {label}: {exc}")
                continue
            folder = Path(tmp) / loaded.name
            onnx = export_onnx(loaded.module, (1, *loaded.input_shape[1:]), folder / "model.onnx").path
            xml = OvBuilder().build(onnx, folder).artifact
            runners = {"torch": TorchRunner(loaded.module, loaded.input_shape),
                       "onnxruntime": OrtRunner(onnx, threads=args.threads),
                       "openvino": OvRunner(xml, threads=args.threads)}
            batch = real_inputs((1, *loaded.input_shape[1:]), 1)
            med = interleaved_medians({k: r.infer for k, r in runners.items()}, batch, rounds=args.rounds, warmup=3,
                                      iterations=20, min_seconds=0.5)
            latency_rows.append((label, med["torch"], med["onnxruntime"], med["openvino"]))
            if loaded.reference is not None:
                throughput_rows.append((label, *_throughput(loaded.reference, runners)))
    print("## FP32 latency, batch 1 (median of per-round medians, ms)\n")
    print("| model | torch | ONNX Runtime | OpenVINO | OpenVINO vs ONNX Runtime |")
    print("|---|---:|---:|---:|---:|")
    for label, t, o, v in latency_rows:
        print(f"| {label} | {t:.2f} | {o:.2f} | {v:.2f} | {o / v:.2f}x |")
    if throughput_rows:
        print("\n## Evaluation throughput on held-out images (images or volumes per second)\n")
        print("inference = batched prediction (sliding window for volumes); evaluation = inference plus "
              "per-class Dice/HD95 or sensitivity with 1000 bootstrap resamples\n")
        print("| model | n | torch inference | ORT inference | OpenVINO inference | torch evaluation | "
              "ORT evaluation | OpenVINO evaluation |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for label, n, ti, te, oi, oe, vi, ve in throughput_rows:
            print(f"| {label} | {n} | {ti:.1f} | {oi:.1f} | {vi:.1f} | {te:.1f} | {oe:.1f} | {ve:.1f} |")
    print(f"\n`medexport build` on the default model: {_build_wall_time():.1f} s wall")
    warning = busy_warning()
    if warning:
        print(f"\nwarning: {warning}")


def _throughput(reference, runners) -> tuple:
    """(n, then per runtime: inference-only rate, end-to-end evaluation rate incl. metrics)."""
    from medexport.evaluation import evaluate, predict_all

    images, labels = reference.heldout()
    rates = []
    for name in ("torch", "onnxruntime", "openvino"):
        start = time.perf_counter()
        predict_all(runners[name], images, roi_size=reference.roi_size)
        rates.append(len(images) / (time.perf_counter() - start))
        start = time.perf_counter()
        evaluate(runners[name], images, labels, task=reference.task, classes=list(reference.classes),
                 roi_size=reference.roi_size, spacing=reference.spacing)
        rates.append(len(images) / (time.perf_counter() - start))
    return (len(images), *rates)


def _build_wall_time() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medexport", "build", "--out", str(Path(tmp) / "o")], check=True,
                       capture_output=True)
        return time.perf_counter() - start


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
