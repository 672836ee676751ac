"""`medexport build`: load -> [compress] -> export -> [int8] -> backend build -> parity -> validation -> latency.

Each stage writes its artifact atomically into the output folder; ``manifest.json`` is written last
and only when every stage passed. A stage that fails a check (parity, guard rail) removes the
artifact it produced and the error says why.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medexport.errors import InputError
from medexport.loading import LAYOUTS, LoadedModel, load_model
from medexport.pipeline._compress import check_compress_options, compress
from medexport.pipeline._stages import (Stage, calibration_images, check_parity, compare,
                                        export, external_files, ir_result, labelled_data,
                                        original_runner, parity_inputs, profile_cost, quantize, quiet_stage,
                                        raise_guard_rail, reference_runner, reject_on_failure, run_batched, validate)
from medexport.pipeline.config import BuildConfig
from medexport.pipeline.manifest import write_manifest, write_reports
from medexport.runtimes._registry import get_backend, make_builder, open_runner


@dataclass
class BuildReport:
    """What a build did and measured; written as report.json and report.md."""

    model: str
    target: str
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "target": self.target, "stage_seconds": self.stages, **self.data}


def run_build(config: BuildConfig, stage: Stage = quiet_stage) -> BuildReport:
    """Run the whole chain for one target; raise a MedexportError (one line) on the first failure."""
    # check the backend and the compression options first: a missing TensorRT or a conflicting option should fail
    # before minutes of work, and before an existing folder loses its manifest
    get_backend(config.target)
    check_compress_options(config)
    out = config.out_dir
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")

    report = BuildReport(model="?", target=config.target)
    timed = _timer(report, stage)
    with timed("load"):
        loaded = load_model(config.model)
        data = labelled_data(loaded, config)
        if config.precision == "int8":  # no real calibration data is an error before any work
            calibration, calibration_source = calibration_images(loaded, config.calib, config.calib_samples)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # the folder is not a verified build until we finish
    report.model = loaded.name
    report.data["input"] = {"shape": list(loaded.input_shape), "layout": LAYOUTS[len(loaded.input_shape)],
                            "dtype": "float32", "dynamic_batch": config.model.dynamic_batch}
    report.data["provenance"] = loaded.provenance

    original = loaded.module
    if config.compress:
        report.data["compression"], report.data["finetune"] = compress(loaded, config, timed)
    if loaded.module is not None:
        with timed("profile"):
            report.data["profile"] = profile_cost(loaded)["totals"]

    onnx_path = out / ("model.compressed.onnx" if config.compress else "model.onnx")
    with timed("export"):
        report.data["export"] = export(loaded, onnx_path, config)
    written = [onnx_path, *(onnx_path.parent / name for name in external_files(onnx_path))]

    with timed("inputs"):
        inputs, input_source = parity_inputs(loaded, config.parity_samples)
    report.data["parity_inputs"] = {"count": int(inputs.shape[0]), "source": input_source}
    reference = reference_runner(loaded, onnx_path)
    with timed("reference"):
        ref_out = run_batched(reference, inputs)
    int8 = config.precision == "int8"
    if loaded.module is not None and (config.target != "onnxruntime" or config.precision != "fp32"):
        # (FP32 on ORT: the backend parity below is this check)
        with timed("onnx parity"):
            report.data["onnx_parity"] = check_parity(onnx_path, ref_out, inputs, config, "exported ONNX")
    source = onnx_path
    if int8:
        with timed(f"quantize ({config.calib_method})"):
            report.data["calibration"] = quantize(onnx_path, calibration, data, config)
        report.data["calibration"]["calibration_data"] = calibration_source
        source = out / report.data["calibration"]["quantization"]["path"]
        written.append(source)

    if config.precision == "fp16" and config.target != "openvino":   # OpenVINO compresses its own IR
        from medexport.exporter.fp16 import FP16_FILENAME, to_fp16

        with timed("fp16"):
            source = to_fp16(onnx_path, out / FP16_FILENAME)
        written.append(source)

    with timed(f"build {config.target}"):
        if int8 and config.int8_engine == "nncf":   # NNCF wrote the OpenVINO IR itself
            result = ir_result(source, config.device)
        else:
            result = make_builder(config.target, device=config.device, max_batch=max(8, config.latency_batch),
                                  precision=config.precision).build(source, out)
    report.data["build"] = result.to_dict()
    written += [f for f in result.files if f not in written]

    runner = open_runner(result.artifact, config.target, device=config.device, precision=config.precision)
    try:
        if int8 or config.precision == "fp16":
            report.data["backend_parity"] = {"not_applicable": f"an {config.precision.upper()} artifact is judged by "
                                                                "the guard rails against the FP32 original"}
        elif loaded.module is None and config.target == "onnxruntime":
            report.data["backend_parity"] = {"not_applicable": "the artifact is the input ONNX file itself"}
        else:
            with timed(f"{config.target} parity"):
                parity = compare(ref_out, run_batched(runner, inputs), config)
                report.data["backend_parity"] = parity.to_dict()
                reject_on_failure(result.files, onnx_path,
                                   lambda: parity.raise_if_failed(f"the {config.target} artifact"))
        if data is None or not config.validate:
            report.data["validation"] = {"skipped": "guard rails not run: no labelled data (pass --data, or use a "
                                                    "reference model)" if config.validate else "--no-validate"}
        else:
            with timed("validate"):
                report.data["validation"] = validate(original_runner(loaded, original, reference), runner, data,
                                                      config)
            rails = report.data["validation"]["guard_rails"]
            if not rails["passed"]:
                write_reports(out, report)
                reject_on_failure(result.files, onnx_path, lambda: raise_guard_rail(rails))
        if config.latency:
            with timed("latency"):
                report.data["latency"] = _latency(runner, reference, loaded, config, onnx_path,
                                                  original if original is not loaded.module else None)
    finally:
        runner.close()

    from medexport.bench import environment

    report.data["environment"] = environment()
    written += write_reports(out, report)
    write_manifest(out, config, loaded, report, written)
    return report


def _timer(report: BuildReport, stage: Stage):
    @contextlib.contextmanager
    def timed(name: str):
        start = time.perf_counter()
        with stage(name):
            yield
        report.stages[name] = round(time.perf_counter() - start, 3)

    return timed


# targets whose FP32 runner on the exported ONNX is cheap to open beside a reduced-precision artifact
SAME_RUNTIME_FP32 = ("onnxruntime", "openvino")


# rounds of the latency comparison: the artifact and every baseline timed in alternation (a shared machine's
# load hits them alike); each variant's middle round by median is reported
LATENCY_ROUNDS = 3


def _latency(runner, reference, loaded: LoadedModel, config: BuildConfig, onnx_path: Path, original=None) -> dict:
    """The artifact's latency, and its speed-up over the torch reference, over FP32 of the same model on the same
    runtime (reduced precision) and over the uncompressed ``original`` in FP32 on the same runtime (compression)."""
    from medexport.bench import busy_warning, interleaved_rounds
    from medexport.zoo.samples import real_inputs

    warnings = [busy_warning()]
    batch = real_inputs((config.latency_batch, *loaded.input_shape[1:]), config.latency_batch)
    with contextlib.ExitStack() as stack:
        variants = {config.target: runner, f"reference ({reference.backend})": reference}
        if config.precision != "fp32" and config.target in SAME_RUNTIME_FP32:
            # is the reduced precision worth it on this CPU? (ONNX Runtime's INT8 can be slower than its FP32)
            variants[f"{config.target} FP32"] = stack.enter_context(
                open_runner(onnx_path, config.target, device=config.device))
        if original is not None and config.target in SAME_RUNTIME_FP32:
            variants[f"{config.target} FP32 original"] = stack.enter_context(_original_runner(original, loaded, config))
        rounds = interleaved_rounds({k: v.infer for k, v in variants.items()}, batch, rounds=LATENCY_ROUNDS,
                                    iterations=config.latency_iterations, min_seconds=1.0 / LATENCY_ROUNDS)
    results = {k: sorted(r, key=lambda x: x.median_ms)[len(r) // 2] for k, r in rounds.items()}
    out = {k: r.to_dict() for k, r in results.items()}
    out["devices"] = runner.devices()
    ms = {k: r.median_ms for k, r in results.items()}
    out["speedup_vs_reference"] = round(ms[f"reference ({reference.backend})"] / ms[config.target], 3)
    if f"{config.target} FP32" in ms:
        out["speedup_vs_fp32"] = round(ms[f"{config.target} FP32"] / ms[config.target], 3)
        if out["speedup_vs_fp32"] < 1.0:
            hint = " (try --int8-layout ort-u8s8)" if config.target == "onnxruntime" and config.precision == "int8" else ""
            warnings.append(f"the {config.precision.upper()} artifact ran slower than {config.target} FP32 on this "
                            f"machine ({out['speedup_vs_fp32']}x){hint}")
    if f"{config.target} FP32 original" in ms:
        out["speedup_vs_original"] = round(ms[f"{config.target} FP32 original"] / ms[config.target], 3)
    out["warning"] = "; ".join(w for w in warnings if w) or None
    return out


@contextlib.contextmanager
def _original_runner(original, loaded: LoadedModel, config: BuildConfig):
    """The uncompressed model exported to a scratch folder and opened in FP32 on the build's runtime."""
    import tempfile

    from medexport.exporter.onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="medexport-original-") as tmp:
        path = export_onnx(original, (1, *loaded.input_shape[1:]), Path(tmp) / "original.onnx",
                           dynamic_batch=config.model.dynamic_batch, simplify=config.simplify).path
        with open_runner(path, config.target, device=config.device) as runner:
            yield runner
