"""Low-rank passes side by side on the zoo models and MONAI U-Nets, post-training (no fine-tuning). Three tables:

1. **Classifiers** (the HSC paper's comparison): every zoo classification model, Global SVD vs Tucker-2 vs
   HSC at each ``--budgets`` MACs factor: MACs ratio, accuracy and macro-F1 with bootstrap SEs, worst
   per-class sensitivity drop, OpenVINO CPU latency; and whether HSC beats both baselines.
2. **Segmentation**: every zoo segmentation model, ``--seg-methods`` (Tucker-2) at each budget: Dice per
   class with bootstrap SEs and the drop against the original, latency.
3. **Latency mode** on OpenVINO CPU: every zoo model plus MONAI U-Nets of the zoo's shape (random weights,
   real images for sensitivity), ``--latency-methods`` at each ``--latency`` target (a fraction of the
   original latency): whether the allocator reaches it, the latency ratio, MACs ratio (ideal speed-up),
   realized speed-up, realized / ideal, and the worst per-class drop on the held-out images (zoo models).

Every latency in a table comes from one interleaved run of all that model's variants (median of
round-robin calls, :func:`medexport.compression._latency.compare`), so machine load hits them alike. Models are read from
the zoo registry, so retrained or re-architected zoo models are picked up as they are.

    flock /tmp/bench.lock /work/venv/bin/python benchmarks/lowrank.py --json out/lowrank.json
    /work/venv/bin/python benchmarks/lowrank.py --tables hsc-sweep --models brain-region-alexnet
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MONAI_UNETS = {  # plain MONAI U-Nets (num_res_units=0) narrower than the zoo's, 16-128 channels, random weights
    "monai-unet2d-128": (2, (1, 1, 128, 128)),
    "monai-unet3d-64": (3, (1, 1, 64, 64, 64)),
}


def monai_unet(spatial_dims: int):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=3, channels=(16, 32, 64, 128),
                strides=(2, 2, 2), num_res_units=0, norm="batch", act="relu").eval()


def pass_config(method: str, calibration: np.ndarray | None, **rule):
    from medexport.compression import get_pass

    compression = get_pass(method)
    return compression.config_type(**rule, calibration=calibration if compression.needs_calibration or
                                   "latency" in rule else None)


def compress(model, shape, method: str, calibration, **rule):
    """(compressed model, record, seconds) or (None, error message, seconds)."""
    from medexport.compression import get_pass
    from medexport.errors import MedexportError

    start = time.perf_counter()
    try:
        small, record = get_pass(method).apply(model, shape, pass_config(method, calibration, **rule))
    except MedexportError as exc:
        return None, str(exc), time.perf_counter() - start
    return small, record, time.perf_counter() - start


def evaluate_on_openvino(model, ref, tmp: Path, tag: str):
    """The metric report of ``model`` exported and run on OpenVINO CPU over the held-out images."""
    from medexport.evaluation import evaluate
    from medexport.exporter import export_onnx
    from medexport.runtimes.openvino.runner import Runner

    path = tmp / f"{tag}.onnx"
    export_onnx(model, ref.input_shape, path)
    images, labels = ref.heldout()
    with Runner(path) as runner:
        report, _ = evaluate(runner.infer, images, labels, task=ref.task, classes=ref.classes,
                             roi_size=ref.roi_size, spacing=ref.spacing)
    return report


THREADS: int | None = None  # OpenVINO inference threads for every latency here (--threads)
PAYOFF = {2: 0.85, 3: 0.7}  # least realized/ideal the latency allocator accepts, by spatial dims (the targets)


def latencies(models: list, shape: tuple[int, ...]) -> list[float]:
    from medexport.compression._latency import compare

    return compare(models, shape, "openvino", threads=THREADS, rounds=30, min_seconds=2.0)


def pm(e, scale: float = 100.0) -> str:
    return f"{scale * e.value:.1f} ± {scale * e.se:.1f}"


def worst_class_drop(before, after) -> tuple[str, float]:
    metric = before.class_metric
    drops = {c: 100 * (before.per_class[c][metric].value - after.per_class[c][metric].value)
             for c in before.per_class if not np.isnan(before.per_class[c][metric].value)}
    name = max(drops, key=drops.get)
    return name, drops[name]


def classifier_table(ref, budgets, methods, tmp: Path) -> str:
    model, shape, calib = ref.build(), tuple(ref.input_shape), ref.calibration()
    base = evaluate_on_openvino(model, ref, tmp, "original")
    variants, rows = [model], [("original", "—", 1.0, base, None, None)]
    for budget in budgets:
        for method in methods:
            small, record, secs = compress(model, shape, method, calib, budget=budget)
            if small is None:
                rows.append((method, f"{budget:g}x", None, None, None, record))
                continue
            rows.append((method, f"{budget:g}x", record.ratio, evaluate_on_openvino(small, ref, tmp, f"{method}{budget}"),
                         len(variants), f"compressed in {secs:.1f} s"))
            variants.append(small)
    ms = latencies(variants, shape)
    lines = [f"### {ref.name} (classification, {base.n} held-out images, OpenVINO CPU, batch 1, {THREADS or 'default'} threads)", "",
             "| method | budget | MACs ratio | accuracy (%) | macro-F1 (%) | worst class drop (pts) | ms | realized "
             "| realized/ideal | note |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for method, budget, ratio, report, idx, note in rows:
        if report is None:
            lines.append(f"| {method} | {budget} | — | — | — | — | — | — | — | {note} |")
            continue
        lat = ms[0 if idx is None else idx]
        drop = "—" if idx is None else "{} {:+.1f}".format(*worst_class_drop(base, report))
        realized = ms[0] / lat
        lines.append(f"| {method} | {budget} | {ratio:.2f} | {pm(report.overall['accuracy'])} "
                     f"| {pm(report.overall['macro_f1'])} | {drop} | {lat:.3f} | {realized:.2f} "
                     f"| {realized / ratio:.2f} | {note or ''} |")
    lines += ["", verdict(rows, budgets)]
    return "\n".join(lines)


def verdict(rows, budgets) -> str:
    """Whether HSC beats both baselines on accuracy and macro-F1 at each budget (by more than one SE)."""
    out = []
    for budget in budgets:
        found = {m: r for m, b, _, r, _, _ in rows if b == f"{budget:g}x" and r is not None}
        if "hsc" not in found or not {"svd", "tucker"} <= set(found):
            out.append(f"{budget:g}x: not all three methods ran")
            continue
        for metric in ("accuracy", "macro_f1"):
            h = found["hsc"].overall[metric]
            others = {m: found[m].overall[metric] for m in ("svd", "tucker")}
            beats = all(h.value - o.value > np.hypot(h.se, o.se) for o in others.values())
            out.append(f"{budget:g}x {metric}: HSC {100 * h.value:.1f} vs SVD {100 * others['svd'].value:.1f}, "
                       f"Tucker {100 * others['tucker'].value:.1f} -> HSC "
                       f"{'beats both (by more than 1 SE)' if beats else 'does not beat both by more than 1 SE'}")
    return "  \n".join(out)


def segmentation_table(ref, budgets, methods, tmp: Path) -> str:
    model, shape, calib = ref.build(), tuple(ref.input_shape), ref.calibration()
    base = evaluate_on_openvino(model, ref, tmp, "original")
    variants, rows = [model], []
    for budget in budgets:
        for method in methods:
            small, record, _ = compress(model, shape, method, calib, budget=budget)
            if small is None:
                rows.append((method, budget, None, None, None, record))
                continue
            rows.append((method, budget, record.ratio, evaluate_on_openvino(small, ref, tmp, f"{method}{budget}"),
                         len(variants), ""))
            variants.append(small)
    ms = latencies(variants, shape)
    classes = list(base.per_class)
    lines = [f"### {ref.name} (segmentation, {base.n} held-out images, Dice % ± SE, OpenVINO CPU, batch 1, {THREADS or 'default'} threads)", "",
             "| method | budget | MACs ratio | " + " | ".join(classes) + " | worst class drop (pts) | ms | realized "
             "| realized/ideal | note |", "|---|---|---:|" + "---:|" * len(classes) + "---:|---:|---:|---:|---|"]
    lines.append("| original | — | 1.00 | " + " | ".join(pm(base.per_class[c]["dice"]) for c in classes)
                 + f" | — | {ms[0]:.2f} | 1.00 | — | |")
    for method, budget, ratio, report, idx, note in rows:
        if report is None:
            lines.append(f"| {method} | {budget:g}x | — | " + " | ".join("—" for _ in classes) + f" | — | — | — | — | {note} |")
            continue
        realized = ms[0] / ms[idx]
        lines.append(f"| {method} | {budget:g}x | {ratio:.2f} | "
                     + " | ".join(pm(report.per_class[c]["dice"]) for c in classes)
                     + " | {} {:+.1f}".format(*worst_class_drop(base, report))
                     + f" | {ms[idx]:.2f} | {realized:.2f} | {realized / ratio:.2f} | |")
    return "\n".join(lines)


def hsc_sweep_table(ref, budgets, regions=(1, 2, 4), clusters=(2, 4, 8)) -> str:
    """HSC's knobs on a classifier: accuracy and macro-F1 (torch, held-out images) per regions x clusters."""
    import torch

    from medexport.evaluation import evaluate

    model, shape, calib = ref.build(), tuple(ref.input_shape), ref.calibration()
    images, labels = ref.heldout()

    def predict(x):
        with torch.no_grad():
            return small(torch.from_numpy(x)).numpy()

    lines = [f"### HSC regions x clusters on {ref.name} (post-training, torch)", "",
             "| budget | regions per axis | clusters | MACs ratio | accuracy (%) | macro-F1 (%) |",
             "|---|---:|---:|---:|---:|---:|"]
    for budget in budgets:
        for r in regions:
            for c in clusters:
                small, record, _ = compress(model, shape, "hsc", calib, budget=budget, regions=r, clusters=c)
                if small is None:
                    lines.append(f"| {budget:g}x | {r} | {c} | — | — | {record[:60]} |")
                    continue
                report, _ = evaluate(predict, images, labels, task=ref.task, classes=ref.classes)
                lines.append(f"| {budget:g}x | {r} | {c} | {record.ratio:.2f} | {pm(report.overall['accuracy'])} "
                             f"| {pm(report.overall['macro_f1'])} |")
    return "\n".join(lines)


def latency_table(subjects, methods, targets, tmp: Path) -> str:
    """Every latency target tried with every method, per network: where the allocator reaches it, the latency
    ratio, MACs ratio and realized/ideal measured side by side with the original in one run (medians)."""
    lines = [f"### Latency mode on OpenVINO CPU (batch 1, {THREADS or 'default'} threads): realized speed-up "
             "(latency before / after) over ideal (MACs before / after); allocator payoff (least realized/ideal) "
             f"{PAYOFF[2]:g} on 2D, {PAYOFF[3]:g} on 3D", "",
             "| network | method | latency target | met | latency ratio | MACs ratio (ideal) | realized | realized/ideal "
             "| worst class drop (pts) | layers | allocator s | note |",
             "|---|---|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, model, shape, calib, ref in subjects:
        base = evaluate_on_openvino(model, ref, tmp, "original") if ref else None
        variants, rows = [model], []
        for method in methods:
            for target in targets:
                small, record, secs = compress(model, shape, method, calib, latency=target, threads=THREADS,
                                               payoff=PAYOFF[len(shape) - 2])
                if small is None:
                    rows.append((method, target, None, record.split(": ", 1)[-1][:110], secs, None))
                    continue
                report = evaluate_on_openvino(small, ref, tmp, f"{method}{target}") if ref else None
                rows.append((method, target, len(variants), record, secs, report))
                variants.append(small)
        ms = latencies(variants, shape)
        geometry = "x".join(map(str, shape[2:]))
        lines.append(f"| {name} ({geometry}) | original | — | — | 1.00 ({ms[0]:.2f} ms) | 1.00 | 1.00 | 1.00 | — | — | — | |")
        for method, target, idx, record, secs, report in rows:
            if idx is None:
                lines.append(f"| {name} | {method} | {target:g} | no | — | — | — | — | — | — | {secs:.0f} | {record} |")
                continue
            latency, realized = ms[idx] / ms[0], ms[0] / ms[idx]
            drop = "{} {:+.1f}".format(*worst_class_drop(base, report)) if report else "—"
            lines.append(f"| {name} | {method} | {target:g} | {'yes' if latency <= target * 1.05 else 'no'} "
                         f"| {latency:.2f} | {record.ratio:.2f} | {realized:.2f} | {realized / record.ratio:.2f} "
                         f"| {drop} | {len(record.layers)} | {secs:.0f} | |")
    return "\n".join(lines)


def latency_subjects(refs, monai: bool):
    """(name, model, input shape, calibration images, zoo reference or None) per network of the latency table."""
    from medexport.zoo.samples import real_inputs

    subjects = [(ref.name, ref.build(), tuple(ref.input_shape), ref.calibration(), ref) for ref in refs]
    if monai:
        import torch

        torch.manual_seed(0)
        for name, (dims, shape) in MONAI_UNETS.items():
            subjects.append((name, monai_unet(dims), shape, real_inputs((8, *shape[1:]), 8), None))
    return subjects


def trained_zoo(names: list[str] | None):
    from medexport.zoo import get_model, list_models

    refs = [get_model(n) for n in (names or list_models())]
    return [r for r in refs if r.weights_path().is_file() and r.data_path().is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="zoo models (default: every trained one)")
    parser.add_argument("--budgets", nargs="+", type=float, default=[3.0, 6.0])
    parser.add_argument("--methods", nargs="+", default=["svd", "tucker", "hsc"], help="classifier methods")
    parser.add_argument("--seg-methods", nargs="+", default=["tucker"])
    parser.add_argument("--latency-methods", nargs="+", default=["svd", "tucker"])
    parser.add_argument("--latency", nargs="+", type=float, default=[0.5, 0.6, 0.7, 0.8, 0.9],
                        help="latency targets, each tried with each latency method")
    parser.add_argument("--no-monai", action="store_true", help="skip the MONAI U-Nets in the latency table")
    parser.add_argument("--tables", nargs="+", default=["classification", "segmentation", "latency"],
                        help="any of classification, segmentation, latency, hsc-sweep")
    parser.add_argument("--json", type=Path, default=None, help="also write the markdown tables here as JSON")
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenVINO inference threads for all latencies (0: OpenVINO's default)")
    args = parser.parse_args(argv)
    global THREADS
    THREADS = args.threads or None
    refs = trained_zoo(args.models)
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for ref in refs:
            table = None
            if ref.task == "classification" and "hsc-sweep" in args.tables:
                tables.append(hsc_sweep_table(ref, args.budgets))
                print(tables[-1] + "\n", flush=True)
            if ref.task == "classification" and "classification" in args.tables:
                table = classifier_table(ref, args.budgets, args.methods, Path(tmp))
            elif ref.task == "segmentation" and "segmentation" in args.tables:
                table = segmentation_table(ref, args.budgets, args.seg_methods, Path(tmp))
            if table:
                tables.append(table)
                print(table + "\n", flush=True)
        if "latency" in args.tables:
            tables.append(latency_table(latency_subjects(refs, not args.no_monai), args.latency_methods, args.latency,
                                        Path(tmp)))
            print(tables[-1] + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"tables": tables}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
