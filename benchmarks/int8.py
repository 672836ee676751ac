"""INT8 side by side in one run: OpenVINO FP32 / our QDQ ONNX / NNCF PTQ, and ONNX Runtime FP32 / INT8.

    python benchmarks/int8.py [--rounds 5] [--models brain-tissue-unet2d,brain-tissue-unet3d]

For each zoo reference model (those registered with weights): export FP32 ONNX, quantize it with
``quantize_qdq`` on the model's bundled calibration images, and quantize the OpenVINO model with
``nncf.quantize`` (default PTQ) on the same images. The five variants are timed at batch 1 in
alternation for ``--rounds`` rounds (machine noise hits all alike); the table shows the median of the
per-round medians, the speed-up over the same runtime's FP32, and the guard-rail verdict (worst
per-class Dice/sensitivity delta) of each variant against ORT FP32 on the held-out images.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="brain-tissue-unet2d,brain-tissue-unet3d,brain-region-alexnet")
    parser.add_argument("--method", default="minmax")
    args = parser.parse_args()
    from medexport.zoo import get_model

    for name in args.models.split(","):
        ref = get_model(name)
        if not ref.weights_path().is_file() or not ref.data_path().is_file():
            print(f"\n{name}: not trained yet (no weights/data in the zoo), skipped", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            print(_bench_model(ref, Path(tmp), args.rounds, args.method))


def _bench_model(ref, tmp: Path, rounds: int, method: str) -> str:
    from medexport.benchmarks import measure_latency
    from medexport.calibration.quantize import QuantConfig, quantize_qdq
    from medexport.evaluation.guardrails import GuardRails
    from medexport.evaluation.validation import reference_data, validate_against
    from medexport.exporter import export_onnx
    from medexport.runtimes.onnxruntime import Runner as OrtRunner
    from medexport.runtimes.openvino import Runner as OvRunner
    from medexport.zoo.samples import real_inputs

    fp32 = export_onnx(ref.build(), ref.input_shape, tmp / "model.onnx").path
    calibration = ref.calibration()
    t0 = time.perf_counter()
    quant = quantize_qdq(fp32, calibration, tmp / "model.int8.qdq.onnx", QuantConfig(method=method))
    calib_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nncf_xml = _nncf_ptq(fp32, calibration, tmp / "model.nncf.xml")
    nncf_s = time.perf_counter() - t0
    runners = {
        "OpenVINO FP32": OvRunner(fp32),
        "OpenVINO on our QDQ ONNX": OvRunner(quant.path),
        "OpenVINO NNCF default PTQ": OvRunner(nncf_xml),
        "ORT FP32": OrtRunner(fp32),
        "ORT INT8 (our QDQ ONNX)": OrtRunner(quant.path),
    }
    batch = real_inputs(tuple(ref.input_shape), 1)   # a real image at the model input size (3D: a crop)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for label, runner in runners.items():
            times[label].append(measure_latency(runner.infer, batch, warmup=5, iterations=30, min_seconds=0.5).median_ms)
    data, rails = reference_data(ref), GuardRails(1.0, 3.0)
    lines = [f"\n### {ref.name} {tuple(ref.input_shape)}: {rounds} rounds, calibration {len(calibration)} images "
             f"({method}, ours {calib_s:.1f} s, NNCF {nncf_s:.1f} s), {quant.quantized_nodes} int8 nodes", "",
             "| variant | median ms | speed-up vs same-runtime FP32 | guard rails vs ORT FP32 | worst class Δ (points) |",
             "|---|---:|---:|:---:|---:|"]
    medians = {k: statistics.median(v) for k, v in times.items()}
    for label, runner in runners.items():
        base = medians["OpenVINO FP32" if label.startswith("OpenVINO") else "ORT FP32"]
        verdict = validate_against(runners["ORT FP32"], runner, data, rails, artifact=label)["guard_rails"]
        worst = min((r["delta_points"] for r in verdict["rows"] if r["scope"] == "class"), default=float("nan"))
        lines.append(f"| {label} | {medians[label]:.2f} | {base / medians[label]:.2f}x | "
                     f"{'held' if verdict['passed'] else 'BROKEN'} | {worst:+.2f} |")
    for runner in runners.values():
        runner.close()
    return "\n".join(lines)


def _nncf_ptq(fp32: Path, calibration, dest: Path) -> Path:
    """NNCF's default post-training quantization of the OpenVINO model, on the same calibration images."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration))
    ov.save_model(quantized, str(dest), compress_to_fp16=False)
    return dest


if __name__ == "__main__":
    main()
