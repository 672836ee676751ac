"""Activation-map compression on the 3D reference U-Net: the paper's memory table, step time, recovery Dice.

Three parts, one run each (rerun them to reproduce the README's tables):

1. **Memory** (``--part memory``): the bytes one training-mode forward pass of brain-tissue-unet3d leaves saved for
   backward (counted by saved-tensor hooks: dense storages once each, compressed ones as values + int32 indices,
   parameters and the input excluded), uncompressed (M_BL) and with DCT at lambda 1.1, 2.5, 10, 100 on BN,
   Conv + BN and Conv + BN + ReLU in block0 .. block0-2, and eta = (M - M_BL) / M_BL, beside the paper's Table 2
   (U-Net, batch 1, 96^3 x 4, DCT lambda 100). Default input 1 x 1 x 96^3 as the paper's (our U-Net has one input
   channel); the byte counts of dense and top-k storage do not depend on the values, so the input is zeros.
2. **Step time** (``--part time``): one distillation step (student forward, loss, backward, Adam step) of the
   50%-pruned reference at 48^3, batch 2, uncompressed and with each transform at lambda 10 on Conv + BN + ReLU in
   block0-1, in alternation for ``--rounds`` rounds; medians and ratios of wall time and of process CPU time (the
   latter is what to read on a shared machine). Takes ``/tmp/bench.lock`` around timing.
3. **Recovery** (``--part recovery``): recovery fine-tuning (``--steps`` of distillation) of the 50%-pruned
   reference, uncompressed and with DCT lambda 10 on Conv + BN + ReLU in block0-1, same seed; per-class Dice on
   the held-out volumes.

    python benchmarks/actcompress.py --part memory [--size 96]
    python benchmarks/actcompress.py --part time --rounds 7 --threads 2
    python benchmarks/actcompress.py --part recovery --steps 200 --threads 2
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import time

import numpy as np

from _lock import bench_lock

RATIOS = (1.1, 2.5, 10.0, 100.0)
TYPES = (("BN", "bn"), ("Conv + BN", "conv,bn"), ("Conv + BN + ReLU", "conv,bn,relu"))
LAYERS = ("block0", "block0-1", "block0-2")   # our U-Net has three resolution levels (the 6^3 ones merge)
# the paper's Table 2, U-Net, batch 1, 96^3 x 4, DCT lambda = 100: eta in % for block0 .. block0-3
PAPER = {"BN": (-36, -45, -47, -48), "Conv + BN": (-53, -68, -71, -72), "Conv + BN + ReLU": (-71, -89, -94, -95)}


def environment() -> str:
    from medexport.bench.environment import cpu_model

    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    isa = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags)
    return (f"{cpu_model()} ({os.cpu_count()} logical cores; {isa or 'no AVX2'}), torch threads "
            f"{__import__('torch').get_num_threads()}, load average {os.getloadavg()[0]:.2f}, "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}")


def memory_table(size: int, batch: int) -> str:
    import torch

    from medexport.finetune.actcompress import ActCompressSpec, activation_memory, eta
    from medexport.zoo import get_model

    model = get_model("brain-tissue-unet3d").build()
    x = torch.zeros(batch, 1, size, size, size)
    base = activation_memory(model, x).saved
    mib = 2 ** 20
    lines = [f"Uncompressed (M_BL, activations saved for backward): {base / mib:.1f} MiB; input {tuple(x.shape)}.", "",
             "| layers | blocks | " + " | ".join(f"lambda {r:g}" for r in RATIOS) + " | paper, lambda 100 |",
             "|---|---|" + "---:|" * len(RATIOS) + "---:|"]
    for label, types in TYPES:
        for i, layers in enumerate(LAYERS):
            cells = []
            for ratio in RATIOS:
                used = activation_memory(model, x, ActCompressSpec.from_flags("dct", ratio, layers, types)).saved
                cells.append(f"{used / mib:.1f} MiB ({eta(used, base):+.0f}%)")
            lines.append(f"| {label} | {layers} | " + " | ".join(cells) + f" | {PAPER[label][i]}% |")
    return "\n".join(lines)


def _pruned():
    from medexport.compression import get_pass
    from medexport.compression.pruning import PruneConfig
    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet3d")
    teacher = ref.build()
    student, _ = get_pass("prune-l2").apply(copy.deepcopy(teacher), tuple(ref.input_shape), PruneConfig(ratio=0.5))
    return ref, teacher, student


def step_times(rounds: int, steps: int) -> str:
    import torch

    from medexport.finetune.actcompress import ActCompressSpec, compressed_activations
    from medexport.finetune.distill import distillation_loss

    ref, teacher, student = _pruned()
    images = torch.from_numpy(ref.calibration()[:2].astype(np.float32))
    variants = {"uncompressed": None, **{m: ActCompressSpec.from_flags(m, 10, "block0-1", "conv,bn,relu")
                                         for m in ("dct", "wavelet", "threshold")}}
    models = {name: copy.deepcopy(student).train() for name in variants}
    optims = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    with torch.no_grad():
        target = teacher.eval()(images)

    def run(name: str) -> tuple[float, float]:
        model, spec = models[name], variants[name]
        context = compressed_activations(model, spec, images[:1]) if spec else contextlib.nullcontext()
        with context:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                loss = distillation_loss(model(images), target, 1.0, 0.1)
                optims[name].zero_grad()
                loss.backward()
                optims[name].step()
            return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps

    for name in variants:   # warm-up
        run(name)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with bench_lock():
        for r in range(rounds):
            for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
                times[name].append(run(name))
    base = [statistics.median(t[i] for t in times["uncompressed"]) for i in (0, 1)]
    lines = ["| variant (lambda 10, Conv + BN + ReLU, block0-1) | wall time per step, median | ratio | "
             "CPU time per step, median | ratio |", "|---|---:|---:|---:|---:|"]
    for name, values in times.items():
        wall, cpu = (statistics.median(v[i] for v in values) for i in (0, 1))
        lines.append(f"| {name} | {wall * 1000:.0f} ms | {wall / base[0]:.2f}x | {cpu * 1000:.0f} ms | "
                     f"{cpu / base[1]:.2f}x |")
    return "\n".join(lines)


def recovery(steps: int) -> str:
    import torch

    from medexport.evaluation import evaluate
    from medexport.finetune import DistillConfig, distill
    from medexport.finetune.actcompress import ActCompressSpec

    ref, teacher, student = _pruned()
    images, labels = ref.heldout()

    def dice(model) -> dict:
        with torch.no_grad():
            report, _ = evaluate(lambda x: model(torch.from_numpy(x)).numpy(), images, labels, task=ref.task,
                                 classes=list(ref.classes), roi_size=ref.roi_size, hd95=False, n_boot=0)
        d = report.to_dict()
        return {"overall": d["overall"]["dice"]["value"],
                **{name: c["dice"]["value"] for name, c in d["per_class"].items()}}

    rows = {"original": dice(teacher.eval()), "pruned 50%, not fine-tuned": dice(student.eval())}
    spec = ActCompressSpec.from_flags("dct", 10, "block0-1", "conv,bn,relu")
    for label, act in (("fine-tuned, uncompressed", None), ("fine-tuned, DCT lambda 10, Conv+BN+ReLU block0-1", spec)):
        tuned, record = distill(copy.deepcopy(student), teacher, ref.calibration(),
                                DistillConfig(steps=steps, act_compress=act))
        rows[f"{label} ({record.seconds:.0f} s)"] = dice(tuned)
    names = list(next(iter(rows.values())))
    lines = ["| model | " + " | ".join(f"Dice {n}" for n in names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {label} | " + " | ".join(f"{100 * v[n]:.1f}" for n in names) + " |" for label, v in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("memory", "time", "recovery"), required=True)
    parser.add_argument("--size", type=int, default=96, help="memory: cubic input size")
    parser.add_argument("--batch", type=int, default=1, help="memory: batch size")
    parser.add_argument("--rounds", type=int, default=7, help="time: alternated rounds")
    parser.add_argument("--steps", type=int, default=None, help="time: steps per round (3); recovery: steps (200)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.part == "memory":
        print(memory_table(args.size, args.batch))
    elif args.part == "time":
        print(step_times(args.rounds, args.steps or 3))
    else:
        print(recovery(args.steps or 200))
    print(f"\n{environment()}")


if __name__ == "__main__":
    main()
