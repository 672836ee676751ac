"""Does `medexport bench` measure what it claims? Agreement with OpenVINO's benchmark_app, repeatability, cold vs
warm, and (on a GPU machine) the torch and ONNX Runtime CUDA runtimes on the reference models.

    python benchmarks/bench_harness.py [--rounds 5] [--threads 1] [--seconds 3] [--models a,b] [--gpu-device cuda]

1. benchmark_app agreement: for each reference model, the FP32 OpenVINO IR is timed by `medexport bench` and by
   OpenVINO's own benchmark_app (`openvino.tools.benchmark.main`, the `benchmark_app` script of the openvino
   wheel) with the same IR, device, threads, batch 1, one stream, sync API and f32 precision, each a fresh
   process, in alternation for ``--rounds`` rounds; medians of the per-round medians and their ratio, for
   medexport's wall-clock median and for its record of OpenVINO's own timer (benchmark_app's). medexport
   compiles with the latency hint, which gives one stream; benchmark_app takes -nthreads/-nstreams only with
   "-hint none" (its own rule), so it gets -hint none -nstreams 1: the same configuration, stated explicitly.
2. Repeatability: the spread (max/min - 1) of `medexport bench`'s medians over those rounds.
3. Cold vs warm: a fresh runner timed from its first call (no warm-up) against a fresh runner timed after the
   warm-up rule, per runtime: first call, median, mean, p99.
4. GPU runtimes (only where torch sees CUDA, or with ``--gpu-device cpu`` to check the script): torch eager,
   torch.compile, torch FP16 and ONNX Runtime's CUDA provider on FP32, compressed (SVD) and FP16 models.
Prints markdown tables with the machine they were measured on.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MODELS = ("brain-tissue-unet2d", "brain-tissue-unet3d", "brain-region-alexnet")
_BENCHMARK_APP = "import sys; from openvino.tools.benchmark.main import main; sys.exit(main())"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per tool, model and round")
    parser.add_argument("--gpu-device", default=None, help="run the GPU table on this torch device (default: "
                                                          "cuda when available, else skipped)")
    parser.add_argument("--models", default=",".join(MODELS), help="reference models, comma separated")
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args()

    from medexport.bench import busy_warning, environment

    env = environment()
    print(f"machine: {env['cpu']} ({', '.join(env['isa'])}), {env['logical_cores']} logical cores, load "
          f"{env['load_average_1m']}; versions {env['versions']}\n")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {name: _build(name, Path(tmp) / name) for name in args.models.split(",")}
        if not args.skip_agreement:
            _agreement(artifacts, args)
        _cold_vs_warm(artifacts, args.threads)
        device = args.gpu_device or _cuda()
        if device:
            _gpu_table(artifacts, device)
        else:
            print("\n## GPU runtimes\n\nNo CUDA GPU here: the torch / ONNX Runtime CUDA table was not measured.")
    print(f"\nload average after: {environment()['load_average_1m']}")
    warning = busy_warning()
    if warning:
        print(f"warning: {warning}")


def _build(name: str, folder: Path) -> dict:
    """The reference model, its FP32 ONNX (dynamic batch) and FP32 OpenVINO IR."""
    from medexport.exporter import export_onnx
    from medexport.loading import ModelSpec, load_model
    from medexport.runtimes.openvino import Builder

    loaded = load_model(ModelSpec(model=name))
    shape = (1, *loaded.input_shape[1:])
    onnx = export_onnx(loaded.module, shape, folder / "model.onnx").path
    return {"module": loaded.module, "shape": shape, "onnx": onnx, "xml": Builder().build(onnx, folder).artifact}


def _agreement(artifacts: dict, args) -> None:
    rows = []
    for name, art in artifacts.items():
        ours, theirs = [], []
        for round_no in range(args.rounds):
            tools = [("ours", _medexport_bench), ("theirs", _benchmark_app)]
            for who, run in tools if round_no % 2 == 0 else tools[::-1]:
                (ours if who == "ours" else theirs).append(run(art, args.threads, args.seconds))
        wall, internal = [o[0] for o in ours], [o[1] for o in ours]
        paired = statistics.median(o / t for o, t in zip(internal, theirs))   # each round's pair saw the same load
        rows.append((name, "x".join(map(str, art["shape"])), statistics.median(wall), statistics.median(internal),
                     statistics.median(theirs), paired, max(wall) / min(wall) - 1, max(theirs) / min(theirs) - 1))
    print(f"## `medexport bench` vs OpenVINO benchmark_app (FP32 IR, CPU, {args.threads} thread(s), batch 1, 1 "
          f"stream, sync, f32; medexport: latency hint; benchmark_app: -hint none -nstreams 1; median of {args.rounds} alternated rounds of {args.seconds:g} s)\n")
    print("| model | input | medexport wall median ms | medexport runtime-timed median ms | benchmark_app median ms "
          "| runtime-timed / benchmark_app | per-round ratios, median | within 10% | wall / benchmark_app | "
          "spread of medexport's wall medians | spread of benchmark_app's |")
    print("|---|---|---:|---:|---:|---:|---:|:---:|---:|---:|---:|")
    for name, shape, wall, internal, theirs, paired, spread_ours, spread_theirs in rows:
        print(f"| {name} | {shape} | {wall:.3f} | {internal:.3f} | {theirs:.3f} | {internal / theirs:.3f} | "
              f"{paired:.3f} | {'yes' if abs(internal / theirs - 1) <= 0.1 else 'NO'} | {wall / theirs:.3f} | "
              f"{spread_ours:.1%} | {spread_theirs:.1%} |")
    print("\nwall: perf_counter around runner.infer (what an application waits); runtime-timed: OpenVINO's "
          "InferRequest.latency of the same calls, the timer benchmark_app reports. spread: max/min - 1 of one "
          "tool's per-round medians (repeatability of fresh-process runs under the load of the moment)")


def _medexport_bench(art: dict, threads: int, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        subprocess.run([sys.executable, "-m", "medexport", "bench", str(art["xml"]), "--threads", str(threads),
                        "--batch", "1", "--min-seconds", str(seconds), "--iterations", "1", "--no-verify",
                        "--json", str(out)], check=True, capture_output=True)
        result = json.loads(out.read_text())["latency"][0]
        return result["median_ms"], result["runtime_median_ms"]


def _benchmark_app(art: dict, threads: int, seconds: float) -> float:
    """benchmark_app's median (ms). The IR keeps its dynamic batch, as medexport runs it: -data_shape feeds batch-1
    data to the dynamic model, where -shape would reshape it to a static one (faster per call on small models,
    so not the same IR)."""
    shape = ",".join(map(str, art["shape"]))
    done = subprocess.run([sys.executable, "-c", _BENCHMARK_APP, "-m", str(art["xml"]), "-d", "CPU",
                           "-hint", "none", "-api", "sync", "-nthreads", str(threads), "-nstreams", "1",
                           "-data_shape", f"[{shape}]", "-infer_precision", "f32", "-t", str(int(seconds))],
                          check=True, capture_output=True, text=True)
    found = re.search(r"Median:\s+([\d.]+)\s*(ms|us)", done.stdout)   # below 1 ms it prints microseconds
    if not found:
        raise RuntimeError(f"benchmark_app printed no median:\n{done.stdout[-2000:]}")
    return float(found.group(1)) / (1000 if found.group(2) == "us" else 1)


def _cold_vs_warm(artifacts: dict, threads: int) -> None:
    """A fresh runner timed from its first call, against a fresh runner timed after the warm-up rule."""
    from medexport.bench.latency import WarmupRule, measure_latency
    from medexport.runtimes import open_runner
    from medexport.zoo.samples import real_inputs

    print("\n## Cold vs warm (fresh runner each; cold: timed from the first call; warm: after the rule "
          f"{WarmupRule().describe()})\n")
    print("| model | runtime | first call ms | cold median | warm median | cold mean | warm mean | cold p99 | "
          "warm p99 | warm-up calls (settled) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, art in artifacts.items():
        batch = real_inputs(art["shape"], 1)
        for target, path in (("onnxruntime", art["onnx"]), ("openvino", art["xml"])):
            with open_runner(path, target, threads=threads) as runner:
                cold = measure_latency(runner.infer, batch, warmup=0, iterations=30, min_seconds=0)
            with open_runner(path, target, threads=threads) as runner:
                warm = measure_latency(runner.infer, batch, warmup=WarmupRule(), iterations=30, min_seconds=0)
            print(f"| {name} | {target} | {cold.samples_ms[0]:.2f} | {cold.median_ms:.2f} | {warm.median_ms:.2f} | "
                  f"{cold.mean_ms:.2f} | {warm.mean_ms:.2f} | {cold.p99_ms:.2f} | {warm.p99_ms:.2f} | "
                  f"{warm.warmup} ({'yes' if warm.warmup_stable else 'no'}) |")


def _gpu_table(artifacts: dict, device: str) -> None:
    """torch eager / compile / FP16 and ONNX Runtime CUDA on FP32, SVD-compressed and FP16 variants."""
    import copy

    import onnxruntime as ort

    from medexport.bench.latency import WarmupRule, measure_latency
    from medexport.compression import LowRankConfig, get_pass
    from medexport.exporter import export_onnx
    from medexport.runtimes.onnxruntime import Runner as OrtRunner
    from medexport.runtimes.torch import Runner as TorchRunner
    from medexport.zoo.samples import real_inputs

    ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    print(f"\n## GPU runtimes on {device} (batch 1, median ms after the warm-up rule; ORT CUDA: "
          f"{'yes' if ort_cuda else 'not installed'})\n")
    print("| model | variant | torch eager | torch.compile | ORT CUDA | peak GPU MiB (torch eager) |")
    print("|---|---|---:|---:|---:|---:|")
    rule = WarmupRule(max_calls=400)
    for name, art in artifacts.items():
        batch = real_inputs(art["shape"], 1)
        small, _ = get_pass("svd").apply(copy.deepcopy(art["module"]), art["shape"], LowRankConfig(budget=2))
        for variant, module, dtype in (("FP32", art["module"], "float32"), ("SVD compressed", small, "float32"),
                                       ("FP16", art["module"], "float16")):
            row = []
            for compile in (False, True):
                runner = TorchRunner(copy.deepcopy(module), art["shape"], device=device, dtype=dtype, compile=compile)
                row.append(measure_latency(runner.infer, batch, warmup=rule, iterations=100, min_seconds=1).median_ms)
                if not compile:
                    memory = runner.peak_gpu_memory_mib()
            ort_ms = None
            if ort_cuda:
                with tempfile.TemporaryDirectory() as tmp:
                    onnx = export_onnx(copy.deepcopy(module).float(), art["shape"], Path(tmp) / "m.onnx").path
                    if dtype == "float16":
                        onnx = _fp16(onnx)
                    with OrtRunner(onnx, device="cuda") as runner:
                        ort_ms = measure_latency(runner.infer, batch, warmup=rule, iterations=100, min_seconds=1).median_ms
            print(f"| {name} | {variant} | {row[0]:.3f} | {row[1]:.3f} | "
                  f"{'–' if ort_ms is None else f'{ort_ms:.3f}'} | {'–' if memory is None else f'{memory:.0f}'} |")


def _fp16(onnx: Path) -> Path:
    """The FP16 ONNX the pipeline makes for reduced precision, inputs and outputs kept FP32."""
    from medexport.exporter.fp16 import to_fp16

    return to_fp16(onnx, onnx.with_name("model_fp16.onnx"))


def _cuda() -> str | None:
    import torch

    return "cuda" if torch.cuda.is_available() else None


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
