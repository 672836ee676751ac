"""`medexport build`: load -> [compress] -> export -> [int8] -> backend build -> parity -> validation -> latency.

Each stage writes its artifact into a staging folder beside the output folder; ``manifest.json`` is written last
and only when every stage passed, and the files move into the output folder then. A stage that fails a check
(parity, guard rail) raises and the error says why; a failed or interrupted build leaves the output folder as it
was (see ``_outdir``).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medexport.errors import InputError
from medexport.loading import LAYOUTS
from medexport.pipeline._compress import compress
from medexport.pipeline._outdir import check_out, staged
from medexport.pipeline._readiness import checked_without_backend, refuse_after_check
from medexport.pipeline._stages import (agreement, compare, export_checked, external_files, ir_result, judge,
                                        original_runner, profile_cost, quantize, raise_guard_rail,
                                        reject_on_failure, validate)
from medexport.pipeline.config import BuildConfig
from medexport.pipeline.context import RunContext, Stage, quiet_stage, reference_runner, run_batched
from medexport.pipeline.manifest import write_manifest, write_reports
from medexport.runtimes import get_backend, get_spec, make_builder, open_runner


@dataclass
class BuildReport:
    """What a build did and measured; written as report.json, report.md and report.html."""

    model: str
    target: str
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "target": self.target, "stage_seconds": self.stages, **self.data}


def run_build(config: BuildConfig, stage: Stage = quiet_stage, expected: dict[str, Any] | None = None) -> BuildReport:
    """Run the whole chain for one target; raise a MedexportError (one line) on the first failure. ``expected``:
    what a recipe recorded of its inputs (``data_digests``, the model's ``provenance``), checked as they are read."""
    # the config has checked the compression options; check the backend and the output folder before minutes of
    # work
    if config.target is None:
        raise InputError("build needs a --target")
    if not checked_without_backend(config.target):   # (TensorRT missing: refused after its readiness check)
        get_backend(config.target)
    check_out(config.out_dir)

    report = BuildReport(model="?", target=config.target)
    timed = _timer(report, stage)
    ctx = RunContext(config, timed, expected)
    with timed("load"):   # the model, then every image set: a missing or changed one is an error before any work
        ctx.read_inputs()
    # written beside --out and moved into it at the end: a failure or Ctrl-C leaves --out as it was
    with staged(config.out_dir, build=True) as out:
        _build(ctx, out, report, timed)
    return report


def _build(ctx: RunContext, out: Path, report: BuildReport, timed) -> None:
    """The stages after loading, writing into ``out`` (the staging folder); the manifest last."""
    config, loaded, data, quant = ctx.config, ctx.loaded, ctx.labelled(), ctx.config.quantization
    report.model = loaded.name
    report.data["input"] = {"shape": list(loaded.input_shape), "layout": LAYOUTS[len(loaded.input_shape)],
                            "dtype": "float32", "dynamic_batch": config.model.dynamic_batch}
    report.data["provenance"] = loaded.provenance

    if config.compression.chain:
        report.data["compression"], report.data["finetune"] = compress(ctx)
    if loaded.module is not None:
        with timed("profile"):
            cost = profile_cost(ctx)
            report.data["profile"] = {**cost["totals"], "layers": [   # per-layer MACs, for report.html
                {"node": layer["name"], "op_type": layer["kind"], "macs": layer["macs"]}
                for layer in cost["layers"] if layer["macs"]]}

    onnx_path = out / ("model.compressed.onnx" if config.compression.chain else "model.onnx")
    spec = get_spec(config.target)
    runs_the_onnx = ".onnx" in spec.suffixes   # the backend's artifact is the ONNX file itself
    # (FP32 on a backend that runs the ONNX itself: the backend parity below is the ONNX's check)
    report.data["export"] = export_checked(ctx, onnx_path, "exported ONNX",
                                           check=not runs_the_onnx or quant.precision != "fp32")
    report.data["onnx_parity"] = report.data["export"].pop("onnx_parity", None)
    written = [onnx_path, *(onnx_path.parent / name for name in external_files(onnx_path))]
    inputs, input_source = ctx.parity_inputs()
    report.data["parity_inputs"] = {"count": int(inputs.shape[0]), "source": input_source}

    source = onnx_path
    if quant.int8:
        with timed(f"quantize ({quant.method})"):
            report.data["calibration"] = quantize(ctx, onnx_path)
        source = out / report.data["calibration"]["quantization"]["path"]
        written.append(source)

    if quant.precision == "fp16" and not spec.fp16_by_builder:   # (OpenVINO compresses its own IR)
        from medexport.exporter.fp16 import FP16_FILENAME, to_fp16

        with timed("fp16"):
            source = to_fp16(onnx_path, out / FP16_FILENAME)
        written.append(source)

    if checked_without_backend(config.target):
        with timed(f"{config.target} readiness"):
            refuse_after_check(config.target, source)
    with timed(f"build {config.target}"):
        if quant.int8 and quant.engine == "nncf":   # NNCF wrote the OpenVINO IR itself
            result = ir_result(source, config.device)
        else:
            result = make_builder(config.target, device=config.device, max_batch=max(8, config.latency.batch),
                                  precision=quant.precision).build(source, out)
    report.data["build"] = result.to_dict()
    written += [f for f in result.files if f not in written]

    runner = open_runner(result.artifact, config.target, device=config.device, precision=quant.precision)
    try:
        if quant.precision != "fp32":
            with timed(f"{config.target} agreement"):
                report.data["backend_parity"] = agreement(ctx, run_batched(runner, inputs), onnx_path, quant.precision)
        elif loaded.module is None and runs_the_onnx:
            report.data["backend_parity"] = {"not_applicable": "the artifact is the input ONNX file itself"}
        else:
            with timed(f"{config.target} parity"):
                parity = compare(ctx, run_batched(runner, inputs), onnx_path)
                report.data["backend_parity"] = judge(ctx, parity, onnx_path, config.target, result.files,
                                                      f"the {config.target} artifact")
        if data is None or not config.validate:
            report.data["validation"] = {"skipped": "guard rails not run: no labelled data (pass --data, or use a "
                                                    "reference model)" if config.validate else "--no-validate"}
        else:
            with timed("validate"):
                report.data["validation"] = validate(ctx, original_runner(ctx, reference_runner(loaded, onnx_path)),
                                                     runner)
            rails = report.data["validation"]["guard_rails"]
            if not rails["passed"]:
                reject_on_failure(result.files, onnx_path, lambda: raise_guard_rail(rails))
        if config.latency.enabled:
            with timed("latency"):
                report.data["latency"] = _latency(runner, ctx, onnx_path)
    finally:
        runner.close()

    from medexport.bench import environment

    report.data["environment"] = environment()
    report.data["data_digests"] = dict(ctx.digests)
    written += write_reports(out, report)
    write_manifest(out, config, loaded, report, written)


def _timer(report: BuildReport, stage: Stage):
    @contextlib.contextmanager
    def timed(name: str):
        start = time.perf_counter()
        with stage(name):
            yield
        report.stages[name] = round(time.perf_counter() - start, 3)

    return timed


# rounds of the latency comparison: the artifact and every baseline timed in alternation (a shared machine's
# load hits them alike); each variant's middle round by median is reported
LATENCY_ROUNDS = 3
# timed calls per variant and round that --latency-seconds never cuts (a median of fewer says little)
LATENCY_MIN_CALLS = 3
LATENCY_WARMUP = 10   # warm-up calls per variant and round (fewer when the budget is short)


def _latency(runner, ctx: RunContext, onnx_path: Path) -> dict:
    """The artifact's latency, and its speed-up over the torch reference, over FP32 of the same model on the same
    runtime (reduced precision) and over the uncompressed original in FP32 on the same runtime (compression)."""
    from medexport.bench import busy_warning, interleaved_rounds
    from medexport.calibration.choices import LAYOUTS
    from medexport.zoo.samples import real_inputs

    config, loaded = ctx.config, ctx.loaded
    target, precision = config.target, config.quantization.precision
    timed_here = get_spec(target).timed_here   # its FP32 runner is cheap to open beside the artifact
    reference = reference_runner(loaded, onnx_path)
    warnings = [busy_warning()]
    batch = real_inputs((config.latency.batch, *loaded.input_shape[1:]), config.latency.batch)
    with contextlib.ExitStack() as stack:
        variants = {target: runner, f"reference ({reference.backend})": reference}
        if precision != "fp32" and timed_here:
            # is the reduced precision worth it on this CPU? (ONNX Runtime's INT8 can be slower than its FP32)
            variants[f"{target} FP32"] = stack.enter_context(open_runner(onnx_path, target, device=config.device))
        if ctx.compressed and timed_here:
            variants[f"{target} FP32 original"] = stack.enter_context(_original_runner(ctx))
        share = config.latency.seconds / (LATENCY_ROUNDS * len(variants))   # each variant's time in each round
        start = time.perf_counter()
        with _latency_progress(config.latency.seconds, len(variants) * LATENCY_ROUNDS) as before:
            rounds = interleaved_rounds({k: v.infer for k, v in variants.items()}, batch, rounds=LATENCY_ROUNDS,
                                        before=before, warmup=LATENCY_WARMUP, iterations=config.latency.iterations,
                                        min_seconds=min(1.0 / LATENCY_ROUNDS, share), max_seconds=share,
                                        min_iterations=LATENCY_MIN_CALLS)
        spent = time.perf_counter() - start
    results = {k: sorted(r, key=lambda x: x.median_ms)[len(r) // 2] for k, r in rounds.items()}
    out = {k: r.to_dict() for k, r in results.items()}
    out["budget"] = {"seconds": config.latency.seconds, "spent_seconds": round(spent, 2),
                     "capped": any(r.iterations < config.latency.iterations or r.warmup < LATENCY_WARMUP
                                   for rs in rounds.values() for r in rs),
                     "timed_calls": {k: sum(r.iterations for r in rs) for k, rs in rounds.items()}}
    out["devices"] = runner.devices()
    ms = {k: r.median_ms for k, r in results.items()}
    out["speedup_vs_reference"] = round(ms[f"reference ({reference.backend})"] / ms[target], 3)
    if f"{target} FP32" in ms:
        out["speedup_vs_fp32"] = round(ms[f"{target} FP32"] / ms[target], 3)
        if out["speedup_vs_fp32"] < 1.0:
            own = [name for name, layout in LAYOUTS.items() if layout.backends == (target,)]
            hint = f" (try --int8-layout {own[0]})" if own and precision == "int8" else ""
            warnings.append(f"the {precision.upper()} artifact ran slower than {target} FP32 on this "
                            f"machine ({out['speedup_vs_fp32']}x){hint}")
    if f"{target} FP32 original" in ms:
        out["speedup_vs_original"] = round(ms[f"{target} FP32 original"] / ms[target], 3)
    out["warning"] = "; ".join(w for w in warnings if w) or None
    return out


@contextlib.contextmanager
def _latency_progress(seconds: float, measurements: int):
    """A transient progress bar over the latency stage's measurements, with the time spent against its budget;
    yields the ``before(variant, round)`` hook of :func:`~medexport.bench.interleaved_rounds`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("latency {task.fields[now]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn(f"(budget {seconds:g} s)"), transient=True)
    with bar:
        task = bar.add_task("latency", total=measurements, now="")
        done = []

        def before(variant: str, round_no: int) -> None:
            bar.update(task, completed=len(done), now=f"{variant}, round {round_no + 1}/{LATENCY_ROUNDS}")
            done.append(variant)

        yield before


@contextlib.contextmanager
def _original_runner(ctx: RunContext):
    """The uncompressed model exported to a scratch folder and opened in FP32 on the build's runtime."""
    import tempfile

    from medexport.exporter.onnx_export import export_onnx

    config = ctx.config
    with tempfile.TemporaryDirectory(prefix="medexport-original-") as tmp:
        path = export_onnx(ctx.original, (1, *ctx.loaded.input_shape[1:]), Path(tmp) / "original.onnx",
                           dynamic_batch=config.model.dynamic_batch, simplify=config.simplify).path
        with open_runner(path, config.target, device=config.device) as runner:
            yield runner
