"""Low-rank passes side by side on the zoo models: MACs, held-out metric and OpenVINO CPU latency.

For each reference model and each method (svd, spatial-svd, tucker) at one MACs budget: compress
(post-training, no fine-tuning), export to ONNX, run the held-out images through OpenVINO CPU with
``medexport.evaluation.evaluate``, and time a batch of one. Prints a markdown table; ``--json``
also writes the rows. Realized speedup is latency before / after; ideal is MACs before / after.

    /work/venv/bin/python benchmarks/lowrank.py --budget 3 --models brain-tissue-unet2d
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

MODELS = ("brain-tissue-unet2d", "brain-region-alexnet", "brain-tissue-unet3d")
METHODS = ("svd", "spatial-svd", "tucker")


@dataclass
class Row:
    model: str
    method: str
    budget: float
    macs_ratio: float | None = None
    metric: str = ""
    before: float | None = None
    before_se: float | None = None
    after: float | None = None
    after_se: float | None = None
    latency_before_ms: float | None = None
    latency_after_ms: float | None = None
    compress_s: float | None = None
    note: str = ""

    @property
    def realized(self) -> float | None:
        if self.latency_before_ms and self.latency_after_ms:
            return self.latency_before_ms / self.latency_after_ms
        return None

    @property
    def efficiency(self) -> float | None:
        return self.realized / self.macs_ratio if self.realized and self.macs_ratio else None


def deployed(model, ref, workdir: Path, tag: str, threads: int | None):
    """Export ``model``, compile it on OpenVINO CPU, score the held-out set and time one image."""
    from medexport.benchmarks.latency import measure_latency
    from medexport.evaluation import evaluate
    from medexport.exporter import export_onnx
    from medexport.runtimes.openvino.runner import Runner

    path = workdir / f"{ref.name}.{tag}.onnx"
    export_onnx(model, ref.input_shape, path)
    images, labels = ref.heldout()
    with Runner(path, threads=threads) as runner:
        report, _ = evaluate(runner.infer, images, labels, task=ref.task, classes=ref.classes,
                             roi_size=ref.roi_size, spacing=ref.spacing)
        sample = np.zeros(ref.input_shape, dtype=np.float32)
        latency = measure_latency(runner.infer, sample, warmup=10, iterations=50, min_seconds=2.0)
    estimate = report.overall[report.overall_metric]
    return report.overall_metric, estimate, latency.median_ms


def bench_model(name: str, methods: tuple[str, ...], budget: float, threads: int | None) -> list[Row]:
    from medexport.compression import LowRankConfig, get_pass
    from medexport.errors import MedexportError
    from medexport.zoo import get_model, list_models

    if name not in list_models():
        return [Row(name, m, budget, note="not registered") for m in methods]
    ref = get_model(name)
    try:
        model = ref.build()
        ref.heldout()
    except MedexportError as exc:
        return [Row(name, m, budget, note=str(exc)) for m in methods]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        metric, base, base_ms = deployed(model, ref, Path(tmp), "original", threads)
        for method in methods:
            row = Row(name, method, budget, metric=metric, before=base.value, before_se=base.se,
                      latency_before_ms=base_ms)
            start = time.perf_counter()
            try:
                small, record = get_pass(method).apply(model, ref.input_shape, LowRankConfig(budget=budget))
            except MedexportError as exc:
                row.note = str(exc)
                rows.append(row)
                continue
            row.compress_s = time.perf_counter() - start
            row.macs_ratio = record.ratio
            _, est, row.latency_after_ms = deployed(small, ref, Path(tmp), method, threads)
            row.after, row.after_se = est.value, est.se
            rows.append(row)
    return rows


def markdown(rows: list[Row]) -> str:
    def f(v, spec=".3f"):
        return "—" if v is None else format(v, spec)

    lines = ["| model | method | budget | MACs ratio | metric | before | after | OV ms before | OV ms after "
             "| realized | realized/ideal | compress s | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        before = f"{f(r.before)} ± {f(r.before_se)}" if r.before is not None else "—"
        after = f"{f(r.after)} ± {f(r.after_se)}" if r.after is not None else "—"
        lines.append(f"| {r.model} | {r.method} | {r.budget:g}x | {f(r.macs_ratio, '.2f')} | {r.metric} | {before} "
                     f"| {after} | {f(r.latency_before_ms, '.2f')} | {f(r.latency_after_ms, '.2f')} "
                     f"| {f(r.realized, '.2f')} | {f(r.efficiency, '.2f')} | {f(r.compress_s, '.1f')} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None, help="OpenVINO inference threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = [row for name in args.models for row in bench_model(name, tuple(args.methods), args.budget, args.threads)]
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "realized": r.realized, "realized_over_ideal": r.efficiency}
                                         for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
