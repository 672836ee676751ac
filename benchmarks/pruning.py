"""Structured pruning and filter merging side by side: the papers' comparisons, and OpenVINO speed-up vs ideal.

Three parts, each from one run (rerun it to reproduce them):

1. **Search** (``--part search``): on every zoo reference model with weights (read generically from the
   registry, so retrained or re-architected zoo models are picked up), under IDENTICAL guard rails
   (validate every step on the held-out images, roll back and lock a group that breaks them): L1 vs L2
   vs BN-scale vs activation scores (one-shot, uniform), one-shot vs iterative, uniform vs capped
   non-uniform (global ranking), medoid drop vs hybrid crossover. Columns: held-out metric before and
   after (the final model, scored with HD95-free metrics as in the search), channels removed, MACs
   ratio, search wall time, validations run, groups locked, OpenVINO CPU latency at batch 1.
2. **Speed-up** (``--part speedup``): every zoo U-Net and plain MONAI U-Nets (``num_res_units=0``,
   channels 16-128, 2D at 128x128 and 3D at 64^3, random weights: latency does not depend on them)
   pruned to 50% of the channels of every group (prune-l2, one-shot, no guard rails). The original
   and the pruned model are timed on OpenVINO CPU in alternation for ``--rounds`` rounds (every other one
   reversed); the table
   gives the median of the per-round medians, realized speed-up and realized / ideal, ideal being the
   MACs ratio.

3. **Latency mode** (``--part latency``): every zoo U-Net pruned by ``prune-l2 --latency F`` (``--iterative``
   steps, default 2; ``--finetune N`` distillation steps after each) for F in ``--targets`` (0.33 on the 2D ones
   only), beside the same pass at uniform ratios 0.25-0.75 (fine-tuned as long in all). The original, the
   latency-mode result and the uniform results are compiled together and timed interleaved (OpenVINO CPU,
   median); the table gives the latency asked, predicted by the table, measured by the pass and here, the
   prediction's error against the pass's measurement, and the worst-class held-out Dice of the latency-mode
   result, with whether every class is within the default guard rails, beside the same for the uniform result
   whose measured latency is closest without being slower.

Against Torch-Pruning, on trained networks: ``benchmarks/torchpruning.py``.

    python benchmarks/pruning.py --part speedup --rounds 5 [--threads 1] [--profile]
    python benchmarks/pruning.py --part search --models brain-tissue-unet2d
    python benchmarks/pruning.py --part latency --threads 1 --targets 0.5 0.33 [--finetune 100]

Timing takes ``/tmp/bench.lock`` (flock) itself, around each side-by-side measurement only, so the long
searches do not hold other benchmarks up. ``--profile`` adds OpenVINO's per-node times of the slowest
nodes, original vs pruned: where the realized speed-up falls short of the MACs ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _lock import bench_lock
from _machine import machine

# (label, pass, scope, steps): the comparisons of the two papers
SEARCHES = (
    ("L1, one-shot", "prune-l1", "layer", 1),
    ("L2, one-shot", "prune-l2", "layer", 1),
    ("BN-scale, one-shot", "prune-bn", "layer", 1),
    ("activation, one-shot", "prune-act", "layer", 1),
    ("L2, iterative x4", "prune-l2", "layer", 4),
    ("L2, iterative x4, capped global", "prune-l2", "global", 4),
    ("medoid merge, iterative x4, capped global", "merge-medoid", "global", 4),
    ("hybrid crossover, iterative x4, capped global", "merge", "global", 4),
)

PLAIN_UNETS = {  # the zoo's planned plain-block U-Nets, random weights
    "monai-unet2d-res0 (16-128, 128^2)": (2, (1, 1, 128, 128)),
    "monai-unet3d-res0 (16-128, 64^3)": (3, (1, 1, 64, 64, 64)),
}


def plain_unet(spatial_dims: int):
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=3, channels=(16, 32, 64, 128),
                strides=(2, 2, 2), num_res_units=0, norm="batch", act="relu").eval()


def compile_ov(model, shape, path: Path, threads: int | None):
    from medexport.exporter import export_onnx
    from medexport.runtimes.openvino.runner import Runner

    export_onnx(model, shape, path)
    return Runner(path, threads=threads)


def side_by_side(runners: list, shape, rounds: int, seconds: float) -> list[float]:
    """Median over rounds of each runner's median latency (ms), runners timed in alternation."""
    from medexport.bench import interleaved_medians

    sample = np.random.default_rng(0).random(shape, dtype=np.float32)
    with bench_lock():
        medians = interleaved_medians(dict(enumerate(r.infer for r in runners)), sample, rounds=rounds, warmup=3,
                                      iterations=15, min_seconds=seconds)
    return list(medians.values())


def node_times(onnx_path: Path, shape, threads: int | None) -> list[tuple[str, str, float]]:
    """OpenVINO's own per-node times (name, type, median ms of 15 runs)."""
    import collections

    import openvino as ov

    core = ov.Core()
    config = {"PERF_COUNT": "YES", **({"INFERENCE_NUM_THREADS": str(threads)} if threads else {})}
    request = core.compile_model(core.read_model(str(onnx_path)), "CPU", config).create_infer_request()
    sample = np.random.default_rng(0).random(shape, dtype=np.float32)
    times = collections.defaultdict(list)
    with bench_lock():
        for i in range(20):
            request.infer({0: sample})
            for info in request.profiling_info if i >= 5 else ():
                times[(info.node_name, info.node_type)].append(info.real_time.total_seconds() * 1e3)
    return [(n, t, statistics.median(v)) for (n, t), v in times.items()]


# -- speed-up ----------------------------------------------------------------------------------------

def speedup_rows(rounds: int, threads: int | None, ratio: float, profile: bool,
                 rounding: tuple[int, ...] = (8, 16)) -> list[str]:
    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    from medexport.zoo import get_model, list_models

    nets = {name: (lambda d=d: plain_unet(d), shape) for name, (d, shape) in PLAIN_UNETS.items()}
    for name in list_models():
        ref = get_model(name)
        if ref.task == "segmentation" and ref.weights_path().is_file():
            nets[name] = (ref.build, tuple(ref.input_shape))
    profiles: list[str] = []
    rows = [f"{ratio:.0%} of the channels of every prunable group (prune-l2, one-shot), kept counts rounded to "
            "multiples of 8 or 16; OpenVINO CPU, batch 1.", "",
            "| network | round to | MACs before (M) | MACs after (M) | ideal (MACs ratio) | OV ms before | OV ms after "
            "| realized speed-up | realized / ideal |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, shape) in nets.items():
            model = build()
            tag = name.split(" ")[0]
            base = compile_ov(model, shape, Path(tmp) / f"{tag}.onnx", threads)
            for round_to in rounding:
                small, record = get_pass("prune-l2").apply(model, shape, PruneConfig(ratio=ratio, round_to=round_to))
                pruned = compile_ov(small, shape, Path(tmp) / f"{tag}.pruned{round_to}.onnx", threads)
                before, after = side_by_side([base, pruned], shape, rounds, seconds=0.5)
                ideal, realized = record.ratio, before / after
                rows.append(f"| {name} | {round_to} | {record.macs_before / 1e6:.1f} | {record.macs_after / 1e6:.1f} "
                            f"| {ideal:.2f} | {before:.2f} | {after:.2f} | {realized:.2f} | {realized / ideal:.2f} |")
                print(rows[-1], file=sys.stderr)
            if profile:
                profiles.append(f"\n{name}: slowest OpenVINO nodes (ms), original -> pruned (rounded to {rounding[0]})")
                pruned = _canonical(node_times(Path(tmp) / f"{tag}.pruned{rounding[0]}.onnx", shape, threads))
                original = _canonical(node_times(Path(tmp) / f"{tag}.onnx", shape, threads))
                for key, ms in sorted(original.items(), key=lambda kv: -kv[1])[:6]:
                    after = pruned.get(key)
                    profiles.append(f"  {key[1]:24s} {ms:7.2f} -> {'?' if after is None else f'{after:.2f}'}  {key[0]}")
    return rows + profiles


def _canonical(times: list[tuple[str, str, float]]) -> dict[tuple[str, str], float]:
    """``{(name, type): ms}`` with OpenVINO's node counters (ConvolutionBackpropData_85) replaced by their rank.

    The counters differ between two compiles of similar graphs but keep their order, so ranks match nodes.
    """
    import re

    pattern = re.compile(r"([A-Z][A-Za-z]+)_(\d+)")
    counters: dict[str, set[int]] = {}
    for name, _, _ in times:
        for stem, number in pattern.findall(name):
            counters.setdefault(stem, set()).add(int(number))
    rank = {stem: {n: i for i, n in enumerate(sorted(numbers))} for stem, numbers in counters.items()}
    return {(pattern.sub(lambda m: f"{m.group(1)}#{rank[m.group(1)][int(m.group(2))]}", name), kind): ms
            for name, kind, ms in times}


# -- search ------------------------------------------------------------------------------------------

@dataclass
class SearchRow:
    label: str
    metric: str
    before: float
    after: float
    removed: int
    total: int
    macs_ratio: float
    seconds: float
    validations: int
    locked: int
    ms_before: float
    ms_after: float


def search_rows(models: list[str], ratio: float, rounds: int, threads: int | None, overall: float,
                per_class: float, only: list[str] | None, latency: bool = True) -> list[str]:
    from rich.progress import Progress

    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    from medexport.compression.pruning.schedule import _Guard
    from medexport.evaluation import GuardRails
    from medexport.evaluation.validation import reference_data
    from medexport.zoo import get_model, list_models

    lines = [f"Guard rails for every search: overall drop <= {overall} points, any class <= {per_class} points; "
             f"target {ratio:.0%} of channels; no fine-tuning.", "",
             "| model | search | metric before | after | channels removed | MACs ratio | search s | validations "
             "| groups locked | OV ms before | OV ms after |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    searches = [s for s in SEARCHES if not only or s[0] in only or s[1] in only]
    for name in models:
        if name not in list_models() or not get_model(name).weights_path().is_file():
            lines.append(f"| {name} | not in the zoo or not trained | | | | | | | | | |")
            continue
        ref = get_model(name)
        model, data, calibration = ref.build(), reference_data(ref), ref.calibration()
        rails = GuardRails(overall, per_class)
        guard = _Guard(model, PruneConfig(heldout=data, rails=rails))
        metric = guard.reference.overall_metric
        with tempfile.TemporaryDirectory() as tmp, Progress(transient=True) as progress:
            task = progress.add_task(name, total=len(searches))
            base = compile_ov(model, ref.input_shape, Path(tmp) / "original.onnx", threads) if latency else None
            for label, method, scope, steps in searches:
                config = PruneConfig(ratio=ratio, scope=scope, steps=steps, calibration=calibration, heldout=data,
                                     rails=rails)
                start = time.perf_counter()
                small, record = get_pass(method).apply(model, ref.input_shape, config)
                seconds = time.perf_counter() - start
                after = guard._report(small).overall[metric].value
                ms_before = ms_after = float("nan")
                if latency:
                    pruned = compile_ov(small, ref.input_shape, Path(tmp) / f"{method}-{scope}-{steps}.onnx", threads)
                    ms_before, ms_after = side_by_side([base, pruned], ref.input_shape, rounds, seconds=0.3)
                removed = sum(g.removed for g in record.layers)
                locked = sum("locked by guard rails" in (g.note or "") for g in record.layers) + \
                    sum(r.startswith("locked by guard rails") for r in record.skipped.values())
                validations = next((e["count"] for e in record.log if e.get("step") == "validations"), 0)
                lines.append(f"| {name} | {label} | {guard.reference.overall[metric].value:.3f} | {after:.3f} "
                             f"| {removed} of {_prunable(model, ref.input_shape)} | {record.ratio:.2f} | {seconds:.0f} "
                             f"| {validations} | {locked} | {ms_before:.2f} | {ms_after:.2f} |")
                print(lines[-1], file=sys.stderr)
                progress.advance(task)
    return lines


# -- latency mode ------------------------------------------------------------------------------------

UNIFORM = (0.25, 0.375, 0.5, 0.625, 0.75)


def latency_rows(models: list[str], targets: list[float], threads: int | None, finetune: int = 0,
                 uniform_ratios: tuple[float, ...] = UNIFORM, steps: int = 2) -> list[str]:
    from medexport.compression import get_pass
    from medexport.compression._latency import Timer
    from medexport.compression.pruning import PruneConfig
    from medexport.compression.pruning.schedule import _Guard
    from medexport.evaluation.validation import reference_data
    from medexport.zoo import get_model

    from medexport.finetune.distill import DistillConfig, distill

    tuning = f"{finetune} distillation steps after each of the {steps} steps (uniform: {steps * finetune} once)" \
        if finetune else "no fine-tuning"
    lines = [f"prune-l2, {steps} steps, {tuning}; OpenVINO CPU, batch 1, {threads or 'default'} thread(s); "
             "worst-class Dice on the held-out images; rails: the default guard rails (overall Dice -1 point, "
             f"each class -3) against the original. {machine()}", "",
             "| model | asked | predicted | measured: pass / here | prediction error | pass s | worst-class Dice "
             "(rails) | uniform at <= that latency: worst-class Dice (rails; ratio, measured) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in models:
        ref = get_model(name)
        shape = tuple(ref.input_shape)
        model, data = ref.build(), reference_data(ref)
        guard = _Guard(model, PruneConfig(heldout=data))
        images = ref.calibration()

        def recover(n: int):
            return (lambda m: distill(m, model, images, DistillConfig(n))[0]) if n else None

        def judged(m) -> str:
            worst = min(per["dice"].value for per in guard._report(m).per_class.values())
            return f"{worst:.3f} ({'pass' if guard.check(m, 'benchmark').passed else 'fail'})"

        uniform = [get_pass("prune-l2").apply(model, shape, PruneConfig(ratio=r, recover=recover(steps * finetune)))[0]
                   for r in uniform_ratios]
        for target in targets:
            if target < 0.4 and len(shape) > 4:
                continue  # 0.33 is asked of the 2D U-Nets only
            start = time.perf_counter()
            config = PruneConfig(latency=target, steps=steps, threads=threads, calibration=images,
                                 recover=recover(finetune))
            small, record = get_pass("prune-l2").apply(model, shape, config)
            seconds = time.perf_counter() - start
            with bench_lock(), Timer("openvino", shape, threads=threads, rounds=25, calls=3, min_seconds=3) as timer:
                handles = [timer.open(m) for m in (model, small, *uniform)]
                base, ours, *flat = timer.time(handles)
            ours /= base
            flat = [ms / base for ms in flat]
            pick = max((i for i in range(len(flat)) if flat[i] <= ours), key=lambda i: flat[i],
                       default=min(range(len(flat)), key=lambda i: flat[i]))
            lat = record.latency
            error = lat["predicted"] / lat["measured"] - 1
            lines.append(f"| {name} | {target:.2f} | {lat['predicted']:.3f} | {lat['measured']:.3f} / {ours:.3f} "
                         f"| {error:+.1%} | {seconds:.0f} | {judged(small)} "
                         f"| {judged(uniform[pick])}; {uniform_ratios[pick]:g}, {flat[pick]:.3f} |")
            print(lines[-1], file=sys.stderr)
    return lines + ["", f"After: {machine()}"]


def _prunable(model, shape) -> int:
    """Output channels of every group the analysis lets us prune (head and locked groups excluded)."""
    from medexport.compression.pruning.dependency import analyze
    from medexport.graph import capture

    return sum(g.channels for g in analyze(capture(model, tuple(shape)), model).groups if g.locked is None)


def main(argv: list[str] | None = None) -> int:
    from medexport.evaluation import GuardRails

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["speedup", "search", "both", "latency"], default="both")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.33], help="latency part: targets")
    parser.add_argument("--finetune", type=int, default=0, help="latency part: distillation steps per pruning step")
    parser.add_argument("--iterative", type=int, default=2, help="latency part: pruning steps")
    parser.add_argument("--uniform", nargs="+", type=float, default=list(UNIFORM), help="latency part: uniform ratios")
    parser.add_argument("--models", nargs="+", default=None, help="zoo models for the search (default: all)")
    parser.add_argument("--searches", nargs="+", default=None, help="labels or pass names to run (default: all)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="OpenVINO inference threads")
    parser.add_argument("--no-latency", action="store_true", help="search part: skip the OpenVINO timing")
    parser.add_argument("--profile", action="store_true", help="speed-up part: OpenVINO per-node times")
    parser.add_argument("--max-overall-drop", type=float, default=GuardRails().max_overall_drop)
    parser.add_argument("--max-class-drop", type=float, default=GuardRails().max_class_drop)
    args = parser.parse_args(argv)
    from medexport.zoo import get_model, list_models

    if args.part == "latency":
        names = args.models or [n for n in list_models() if "unet" in n and get_model(n).weights_path().is_file()]
        print("\n".join(latency_rows(names, args.targets, args.threads, args.finetune, tuple(args.uniform),
                                  args.iterative)))
    if args.part in ("speedup", "both"):
        print("\n".join(speedup_rows(args.rounds, args.threads, args.ratio, args.profile)) + "\n")
    if args.part in ("search", "both"):
        print("\n".join(search_rows(args.models or list_models(), args.ratio, args.rounds, args.threads,
                                    args.max_overall_drop, args.max_class_drop, args.searches,
                                    not args.no_latency)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
