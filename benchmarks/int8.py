"""INT8 side by side in one run: OpenVINO FP32 / FP16 / our QDQ ONNX / NNCF PTQ, ONNX Runtime FP32 / FP16 / INT8
(ours, and onnxruntime's own U8S8 layout), our OpenVINO layout, compressed + INT8 against the FP32 original,
and the calibration time of the 2D reference model on 256 real images.

    python benchmarks/int8.py [--rounds 5] [--models brain-tissue-unet2d,brain-tissue-unet3d]
                              [--prune prune-l2:0.1,0.25,0.5] [--search] [--finetune STEPS] [--subpixel]
                              [--threads N] [--calib256]
    python benchmarks/int8.py --networks resnet18-2d,basicunet-2d,brain-tissue-unet2d [--threads 1] [--profile]

``--networks`` prints one table, one row per network (MONAI networks outside the zoo, untrained, calibrated on
real brain slices or crops at their input size, and zoo reference models, on their own calibration images):
OpenVINO FP32, our QDQ ONNX in the openvino layout and NNCF's default PTQ, with an A/A control (our file
compiled again), timed in alternated rounds; the speed-ups over FP32, ours against NNCF, and for the zoo models
the worst per-class metric drop of each against FP32 on the held-out images. ``--profile`` adds, per network,
OpenVINO's per-node profile of ours against NNCF's (``medexport.bench.node_times``): time per op type and the
convolutions in float on one side only.

For each zoo reference model: export FP32 ONNX, quantize it with ``quantize_qdq`` on the model's bundled
calibration images, and quantize the OpenVINO model with ``nncf.quantize`` (default PTQ) on the same images.
All variants are timed at batch 1 in alternation for ``--rounds`` rounds, every other round in reverse order
(machine noise hits all alike); the table shows the median of the per-round medians, the speed-up over the
same runtime's FP32 (and, for compressed rows, over the original's OpenVINO FP32), and the guard-rail verdict
(1 point overall, 3 points per class) with the worst per-class Dice/sensitivity delta against ORT FP32 of the
original on the held-out images. The ratio over the original's OpenVINO FP32 is also given round by round
(min-max of the per-round ratios: how far one run's figure can move), and the header says what the timings
ran on: CPU and its ISA, OpenVINO's threads and inference precision, the share of the CPU other processes
used just before timing and the load average around it. On a shared 2-core machine with other jobs busy a
ratio of a sub-millisecond model over a several-millisecond one moves by 2x or more either way, so quote
ranges over runs with the load, and what the compression found (printed above the table: a search that
rolls back a step yields another model). "ort-u8s8" is onnxruntime's own layout (asymmetric uint8
activations, Q/DQ around every op): its fast x86 path, not TensorRT-compatible (``--int8-layout ort-u8s8``); "openvino" is the
TensorRT placement with uint8 (zero point 0) ReLU outputs, as NNCF makes them (``--int8-layout openvino``,
OpenVINO only).
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OV_THREADS: int | None = None   # --threads: OpenVINO inference threads of every OpenVINO runner (None: its default)
OURS_LABEL = "OpenVINO on our QDQ ONNX --int8-layout openvino"
AA_LABEL = "A/A control: our --int8-layout openvino file again (noise floor)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="brain-tissue-unet2d,brain-tissue-unet3d,brain-region-alexnet")
    parser.add_argument("--method", default="minmax")
    parser.add_argument("--prune", default="prune-l2:0.1,0.25,0.5",
                        help="pass:ratio,ratio... compressed + INT8 rows (empty: none)")
    parser.add_argument("--search", action="store_true",
                        help="prune as a user would: 4 iterative steps, capped global ranking, every step guard-railed "
                             "on the held-out images with rollback (default: one-shot, no guard rails)")
    parser.add_argument("--finetune", type=int, default=0,
                        help="fine-tune every compressed model this many steps by distillation from the original on "
                             "its calibration images (medexport's --finetune; with --search, spread over the 4 "
                             "steps, each fine-tuned before it is judged)")
    parser.add_argument("--subpixel", action="store_true",
                        help="also time every model after the subpixel rewrite (medexport's --compress ...,subpixel)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OpenVINO inference threads for every OpenVINO variant (default: OpenVINO's own, with "
                             "the LATENCY hint)")
    parser.add_argument("--calib256", action="store_true", help="time calibrating the 2D model on 256 real slices")
    parser.add_argument("--networks", default="",
                        help=f"one ours-vs-NNCF table over these networks and exit ({', '.join(NETWORKS)}, or zoo "
                             "model names)")
    parser.add_argument("--profile", action="store_true", help="with --networks: per-node profiles, ours vs NNCF")
    args = parser.parse_args()
    global OV_THREADS
    OV_THREADS = args.threads
    if args.networks:
        print(_networks_table(args.networks.split(","), args.rounds, args.method, args.profile), flush=True)
        return
    from medexport.zoo import get_model

    for name in args.models.split(","):
        ref = get_model(name)
        if not ref.weights_path().is_file() or not ref.data_path().is_file():
            print(f"\n{name}: not trained yet (no weights/data in the zoo), skipped", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            print(_bench_model(ref, Path(tmp), args.rounds, args.method, args.prune, args.search, args.finetune,
                               args.subpixel),
                  flush=True)
    if args.calib256:
        with tempfile.TemporaryDirectory() as tmp:
            print(_calibration_time(Path(tmp), args.method))


def _bench_model(ref, tmp: Path, rounds: int, method: str, prune: str, search: bool, finetune: int,
                 subpixel: bool) -> str:
    from medexport.bench import busy_warning, interleaved_medians, interleaved_rounds
    from medexport.calibration.quantize import QuantConfig, quantize_qdq
    from medexport.evaluation.guardrails import GuardRails
    from medexport.evaluation import evaluate
    from medexport.evaluation.validation import reference_data
    from medexport.exporter import export_onnx
    from medexport.exporter.fp16 import to_fp16
    from medexport.runtimes.onnxruntime import Runner as OrtRunner
    from medexport.zoo.samples import real_inputs

    fp32 = export_onnx(ref.build(), ref.input_shape, tmp / "model.onnx").path
    calibration = ref.calibration()
    t0 = time.perf_counter()
    quant = quantize_qdq(fp32, calibration, tmp / "model.int8.qdq.onnx", QuantConfig(method=method))
    calib_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nncf_xml = _nncf_ptq(fp32, calibration, tmp / "model.nncf.xml")
    nncf_s = time.perf_counter() - t0
    ours_ov = _layout(fp32, calibration, tmp / "model.ov.qdq.onnx", "openvino", method)
    runners = {
        "OpenVINO FP32": _ov_runner(fp32),
        "OpenVINO FP16 (IR + f16 hint)": _ov_runner(_ov_fp16(fp32, tmp), precision="fp16"),
        "OpenVINO on our QDQ ONNX (TensorRT layout)": _ov_runner(quant.path, precision="int8"),
        OURS_LABEL: _ov_runner(ours_ov, precision="int8"),
        "OpenVINO NNCF default PTQ": _ov_runner(nncf_xml, precision="int8"),
        # the same file compiled and timed again: how far two timings of one model differ in this run
        AA_LABEL: _ov_runner(ours_ov, precision="int8"),
        "ORT FP32": OrtRunner(fp32),
        "ORT FP16": OrtRunner(to_fp16(fp32, tmp / "model.fp16.onnx")),
        "ORT INT8 (our QDQ ONNX, S8S8)": OrtRunner(quant.path),
        "ORT INT8 --int8-layout ort-u8s8 (ORT only)": OrtRunner(
            _layout(fp32, calibration, tmp / "model.u8s8.onnx", "ort-u8s8", method)),
    }
    notes = []   # what each compression found: a rerun that finds another model times another model
    for spec in filter(None, prune.split(";")):
        method_name, ratios = spec.split(":")
        for ratio in ratios.split(","):
            compressed, note = _compressed(ref, method_name, float(ratio), calibration, tmp, method, search,
                                           finetune, subpixel)
            runners.update(compressed)
            notes.append(note)
    if subpixel:
        runners.update(_ov_pair(_subpixel(ref.build(), ref), ref, calibration, tmp / "model.subpixel",
                                "subpixel (exact rewrite)", method))
    batch = real_inputs(tuple(ref.input_shape), 1)   # a real image at the model input size (3D: a crop)
    busy, load_before = busy_warning(), os.getloadavg()
    per_round = interleaved_rounds({k: r.infer for k, r in runners.items()}, batch, rounds=rounds, warmup=5,
                                   iterations=30, min_seconds=0.5)
    load_after = os.getloadavg()
    medians = {k: statistics.median(r.median_ms for r in results) for k, results in per_round.items()}
    original = [r.median_ms for r in per_round["OpenVINO FP32"]]
    # the ratio over the original round by round (both timed back to back in that round): its spread is what
    # one run's figure can move by on this machine
    round_ratios = {k: [o / r.median_ms for o, r in zip(original, results)] for k, results in per_round.items()}
    data, rails = reference_data(ref), GuardRails()
    common = {"task": data.task, "classes": list(data.classes), "roi_size": data.roi_size, "spacing": data.spacing}
    reference, _ = evaluate(runners["ORT FP32"], data.images, data.labels, **common)   # scored once, not per row
    lines = [f"\n### {ref.name} {tuple(ref.input_shape)}: {rounds} rounds, calibration {len(calibration)} images "
             f"({method}, ours {calib_s:.1f} s, NNCF {nncf_s:.1f} s), {quant.quantized_nodes} int8 nodes", "",
             _machine(runners["OpenVINO FP32"], busy, load_before, load_after), "",
             *(f"- {n}" for n in notes), *([""] if notes else []),
             "| variant | median ms | speed-up vs same-runtime FP32 | vs original OpenVINO FP32 "
             "| per-round range vs original | guard rails vs ORT FP32 | worst class Δ (points) |",
             "|---|---:|---:|---:|---:|:---:|---:|"]
    for label, runner in runners.items():
        same = "ORT FP32" if label.startswith("ORT") else "OpenVINO FP32"
        if label.startswith(("pruned", "subpixel")):
            same = label.split(" / ")[0] + " / OpenVINO FP32"
        verdict = rails.check(reference, evaluate(runner, data.images, data.labels, **common)[0], artifact=label)
        worst = min((r["delta_points"] for r in verdict.to_dict()["rows"] if r["scope"] == "class"),
                    default=float("nan"))
        lines.append(f"| {label} | {medians[label]:.2f} | {medians[same] / medians[label]:.2f}x | "
                     f"{medians['OpenVINO FP32'] / medians[label]:.2f}x | "
                     f"{min(round_ratios[label]):.2f}-{max(round_ratios[label]):.2f}x | "
                     f"{'held' if verdict.passed else 'BROKEN'} | {worst:+.2f} |")
    # ours against NNCF head to head: only those three runners, more rounds, so a few per cent can be told from noise
    trio = {k: runners[k].infer for k in (OURS_LABEL, "OpenVINO NNCF default PTQ", AA_LABEL)}
    head = interleaved_medians(trio, batch, rounds=max(11, rounds), warmup=5, iterations=30, min_seconds=0.5)
    ours, nncf, again = head.values()
    lines += ["", f"Head to head ({max(11, rounds)} rounds, these three alone): ours {ours:.2f} ms, NNCF default PTQ "
                  f"{nncf:.2f} ms ({100 * (ours / nncf - 1):+.1f}%), ours again {again:.2f} ms (the A/A control: "
                  f"{100 * abs(ours / again - 1):.1f}%, the noise floor)."]
    for runner in runners.values():
        runner.close()
    return "\n".join(lines)


# MONAI networks a user brings (untrained weights: latency and placement, not accuracy): factory, kwargs, input
NETWORKS = {
    "resnet18-2d": ("resnet18", {"spatial_dims": 2, "n_input_channels": 1, "num_classes": 3}, (1, 1, 224, 224)),
    "basicunet-2d": ("BasicUNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2}, (1, 1, 128, 128)),
    "unet-2d": ("UNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": (16, 32, 64, 128),
                         "strides": (2, 2, 2), "num_res_units": 2}, (1, 1, 128, 128)),
    "segresnet-2d": ("SegResNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "init_filters": 16},
                     (1, 1, 128, 128)),
    "densenet121-2d": ("DenseNet121", {"spatial_dims": 2, "in_channels": 1, "out_channels": 3}, (1, 1, 128, 128)),
}


def _networks_table(names: list[str], rounds: int, method: str, profile: bool) -> str:
    """Ours (openvino layout) against NNCF's default PTQ on each network, one row each, in one run."""
    from medexport.bench import busy_warning
    from medexport.zoo import get_model

    busy, load_before = busy_warning(), os.getloadavg()
    rows, profiles, first = [], [], None
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            if name in NETWORKS:
                import monai.networks.nets as nets

                factory, kwargs, shape = NETWORKS[name]
                model, ref = getattr(nets, factory)(**kwargs).eval(), None
            else:
                ref = get_model(name)
                model, shape = ref.build(), tuple(ref.input_shape)
            row, runner, prof = _network_row(name, model, shape, ref, Path(tmp), rounds, method, profile)
            rows.append(row)
            profiles += [f"\n#### {name}: per-node profile, OpenVINO CPU, ours vs NNCF\n\n{prof}"] if prof else []
            first = first or _machine(runner, busy, load_before, os.getloadavg())
    return "\n".join([f"\n### INT8 on OpenVINO: ours (--int8-layout openvino) against NNCF default PTQ, {rounds} "
                      f"alternated rounds, median", "", first or "", "",
                      "| network | input | FP32 ms | ours ms | NNCF ms | ours speed-up | NNCF speed-up | ours vs NNCF "
                      "| A/A | worst class Δ ours | worst class Δ NNCF |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, *profiles])


def _network_row(name: str, model, shape, ref, tmp: Path, rounds: int, method: str, profile: bool):
    """One table row: FP32, ours, NNCF, ours again timed in alternation; worst class drops for a zoo model."""
    from medexport.bench import interleaved_medians
    from medexport.bench.node_times import compare, node_times
    from medexport.exporter import export_onnx
    from medexport.zoo.samples import real_inputs

    fp32 = export_onnx(model, shape, tmp / "model.onnx").path
    calibration = ref.calibration() if ref is not None else real_inputs(shape, 32)
    ours = _layout(fp32, calibration, tmp / "model.ov.qdq.onnx", "openvino", method)
    nncf = _nncf_ptq(fp32, calibration, tmp / "model.nncf.xml")
    runners = {"fp32": _ov_runner(fp32), "ours": _ov_runner(ours, precision="int8"),
               "nncf": _ov_runner(nncf, precision="int8"), "again": _ov_runner(ours, precision="int8")}
    batch = calibration[:1] if ref is None else real_inputs(shape, 1)
    ms = interleaved_medians({k: r.infer for k, r in runners.items()}, batch, rounds=rounds, warmup=5, iterations=20,
                             min_seconds=0.3)
    worst = {k: "n/a (untrained)" for k in ("ours", "nncf")}
    if ref is not None:
        worst = _worst_class_drops(ref, runners)
    prof = ""
    if profile:
        prof = compare(node_times(ours, "openvino", batch, threads=OV_THREADS, runs=10),
                       node_times(nncf, "openvino", batch, threads=OV_THREADS, runs=10)).markdown("ours", "NNCF")
    row = (f"| {name} | {'x'.join(map(str, shape))} | {ms['fp32']:.2f} | {ms['ours']:.2f} | {ms['nncf']:.2f} | "
           f"{ms['fp32'] / ms['ours']:.2f}x | {ms['fp32'] / ms['nncf']:.2f}x | {100 * (ms['ours'] / ms['nncf'] - 1):+.1f}% "
           f"| {100 * abs(ms['ours'] / ms['again'] - 1):.1f}% | {worst['ours']} | {worst['nncf']} |")
    for runner in list(runners.values())[1:]:
        runner.close()
    return row, runners["fp32"], prof


def _worst_class_drops(ref, runners) -> dict[str, str]:
    """The worst per-class metric change (points) of ours and NNCF's against OpenVINO FP32 on the held-out images."""
    from medexport.evaluation import evaluate
    from medexport.evaluation.guardrails import GuardRails
    from medexport.evaluation.validation import reference_data

    data = reference_data(ref)
    common = {"task": data.task, "classes": list(data.classes), "roi_size": data.roi_size, "spacing": data.spacing}
    reference, _ = evaluate(runners["fp32"], data.images, data.labels, **common)
    out = {}
    for key in ("ours", "nncf"):
        verdict = GuardRails().check(reference, evaluate(runners[key], data.images, data.labels, **common)[0],
                                     artifact=key).to_dict()
        out[key] = f"{min(r['delta_points'] for r in verdict['rows'] if r['scope'] == 'class'):+.2f}"
    return out


def _compressed(ref, method_name: str, ratio: float, calibration, tmp: Path, method: str, search: bool,
                finetune: int, subpixel: bool) -> dict:
    """The pruned model (fine-tuned by distillation if ``finetune`` steps) on OpenVINO in FP32 and on our QDQ ONNX
    (and, with ``subpixel``, the same after the subpixel rewrite)."""
    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    from medexport.evaluation import GuardRails
    from medexport.evaluation.validation import reference_data
    from medexport.finetune import DistillConfig, distill

    config = PruneConfig(ratio=ratio, calibration=calibration)
    if search:   # as `--iterative 4 --scope global --rollback [--finetune N]`: each step recovered, then judged
        seeds = itertools.count()   # another seed each round, as the pipeline's recovery

        def recover(model):
            return distill(model, ref.build(), calibration, DistillConfig(steps=max(1, finetune // 4),
                                                                          seed=next(seeds)))[0]

        config = PruneConfig(ratio=ratio, calibration=calibration, steps=4, scope="global",
                             heldout=reference_data(ref), rails=GuardRails(),
                             recover=recover if finetune else None)
    pruned, record = get_pass(method_name).apply(ref.build(), tuple(ref.input_shape), config)
    if finetune and not search:
        pruned, _ = distill(pruned, ref.build(), calibration, DistillConfig(steps=finetune))
    label = (f"pruned {method_name} {ratio:g}{' (guard-railed search)' if search else ''}"
             f"{f' + {finetune} fine-tuning steps' if finetune else ''}")
    runners = _ov_pair(pruned, ref, calibration, tmp / f"pruned{ratio}", label, method)
    if subpixel:
        runners.update(_ov_pair(_subpixel(pruned, ref), ref, calibration, tmp / f"pruned{ratio}.subpixel",
                                f"{label} + subpixel", method))
    steps = [e for e in getattr(record, "log", []) if "passed" in e]
    note = (f"{label}: {record.ratio:.2f}x fewer MACs, {record.params_ratio:.2f}x fewer parameters, "
            f"{len(record.layers)} groups pruned, {len(record.skipped)} left whole"
            + (f"; guard-rail checks {sum(e['passed'] for e in steps)} passed / "
               f"{sum(not e['passed'] for e in steps)} rolled back "
               f"({', '.join(e['step'] for e in steps if not e['passed']) or 'none'})" if steps else ""))
    return runners, note


def _ov_pair(model, ref, calibration, stem: Path, label: str, method: str) -> dict:
    """``model`` on OpenVINO in FP32 and on our QDQ ONNX in the OpenVINO target's default layout."""
    from medexport.calibration.quantize import QuantConfig, quantize_qdq
    from medexport.exporter import export_onnx

    path = export_onnx(model, ref.input_shape, stem.parent / f"{stem.name}.onnx").path
    qdq = quantize_qdq(path, calibration, stem.parent / f"{stem.name}.int8.qdq.onnx",
                       QuantConfig(method=method, layout="openvino")).path
    return {f"{label} / OpenVINO FP32": _ov_runner(path),
            f"{label} / OpenVINO on our QDQ ONNX (openvino layout)": _ov_runner(qdq, precision="int8")}


def _machine(original, busy: str | None, load_before, load_after) -> str:
    """One line: the CPU, its ISA, how OpenVINO compiled the original FP32 model, and how busy the machine was."""
    from medexport.bench.environment import cpu_model

    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    except OSError:
        flags = []
    isa = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8") if f in flags)
    compiled = original.compiled

    def prop(name):
        try:
            value = compiled.get_property(name)
            return value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        except Exception:  # noqa: BLE001 - a property this OpenVINO version does not have
            return "?"

    return (f"Timed on {cpu_model()} ({os.cpu_count()} logical cores; {isa or 'no AVX2'}), {platform.python_version()}"
            f" on {time.strftime('%Y-%m-%d %H:%M %Z')}; OpenVINO original FP32: {prop('INFERENCE_NUM_THREADS')} "
            f"threads, {prop('NUM_STREAMS')} stream(s), inference precision {prop('INFERENCE_PRECISION_HINT')}, "
            f"hint {prop('PERFORMANCE_HINT')}; load average {load_before[0]:.2f} before timing, "
            f"{load_after[0]:.2f} after" + (f". WARNING: {busy}" if busy else ""))


def _ov_runner(path, precision: str = "fp32"):
    """An OpenVINO runner at ``--threads`` (OpenVINO's default when not given)."""
    from medexport.runtimes.openvino import Runner

    return Runner(path, precision=precision, threads=OV_THREADS)


def _subpixel(model, ref):
    """``model`` with the transposed convs that measure faster on OpenVINO rewritten (medexport's subpixel pass)."""
    from medexport.compression import get_pass
    from medexport.compression.rewrite.subpixel import SubPixelConfig

    return get_pass("subpixel").apply(model, tuple(ref.input_shape), SubPixelConfig(backend="openvino"))[0]


def _ov_fp16(fp32: Path, tmp: Path) -> Path:
    from medexport.runtimes.openvino import Builder

    return Builder(precision="fp16").build(fp32, tmp).artifact


def _layout(fp32: Path, calibration, dest: Path, layout: str, method: str) -> Path:
    """Our QDQ ONNX in a one-backend layout: ``ort-u8s8`` (onnxruntime's own placement, uint8 asymmetric
    activations) or ``openvino`` (the TensorRT placement with uint8 zero-point-0 ReLU outputs, as NNCF's)."""
    from medexport.calibration.quantize import QuantConfig, quantize_qdq

    return quantize_qdq(fp32, calibration, dest, QuantConfig(method=method, layout=layout)).path


def _nncf_ptq(fp32: Path, calibration, dest: Path) -> Path:
    """NNCF's default post-training quantization of the OpenVINO model, on the same calibration images."""
    from medexport.calibration.nncf_ptq import quantize_nncf

    return quantize_nncf(fp32, calibration, dest).path


def _calibration_time(tmp: Path, method: str) -> str:
    """Seconds to calibrate brain-tissue-unet2d on 256 real MNI152 slices (the training script's source)."""
    from medexport.calibration.quantize import QuantConfig, quantize_qdq, quantize_with_guard_rails
    from medexport.evaluation.guardrails import GuardRails
    from medexport.evaluation.validation import reference_data
    from medexport.exporter import export_onnx
    from medexport.zoo import get_model

    sys.path.insert(0, str(ROOT / "scripts" / "zoo"))
    import _common as C  # noqa: E402 - training-time helpers (need nilearn)
    import train_brain_tissue_unet2d as T  # noqa: E402

    ref = get_model("brain-tissue-unet2d")
    z0, z1 = C.HELDOUT_Z_MM
    slices, _ = T.slices(0.5, lambda z: z < z0 - C.GAP_MM or z > z1 + C.GAP_MM)   # training side only
    pick = slices[T.np.linspace(0, len(slices) - 1, 256).round().astype(int)]
    images = C.from_uint8(pick)
    fp32 = export_onnx(ref.build(), ref.input_shape, tmp / "model.onnx").path
    t0 = time.perf_counter()
    quant = quantize_qdq(fp32, images, tmp / "q.onnx", QuantConfig(method=method))
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = quantize_with_guard_rails(fp32, images, tmp / "g.onnx", reference_data(ref), GuardRails(),
                                       QuantConfig(method=method))
    railed = time.perf_counter() - t0
    return (f"\n### calibration of brain-tissue-unet2d on {quant.calibration_images} real MNI152 slices ({method})\n\n"
            f"| step | seconds |\n|---|---:|\n| quantize_qdq (calibrate + write + check) | {plain:.1f} |\n"
            f"| with guard rails on the 27 held-out slices ({'held' if result.validation['guard_rails']['passed'] else 'BROKEN'}, "
            f"{len(result.float_layers)} float layers) | {railed:.1f} |")


if __name__ == "__main__":
    main()
