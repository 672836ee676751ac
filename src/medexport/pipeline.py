"""`medexport build`: capture -> export -> backend build -> parity -> validation -> latency -> manifest.

Each stage writes its artifact atomically into the output folder; ``manifest.json`` is written last
and only when every stage passed, so a folder with a manifest is a complete, verified build. A stage
that fails a check (parity, guard rail) removes the artifact it produced and the error says why.
"""
from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np

from medexport._io import sha256, write_json, write_text
from medexport.errors import InputError, MedexportError
from medexport.loading import LAYOUTS, LoadedModel, ModelSpec, load_model
from medexport.runtimes._registry import TARGETS, get_backend, make_builder, open_runner

FP32_TOLERANCE = 1e-4
FP32_RTOL = 1e-4


@dataclass
class BuildConfig:
    """Everything `medexport build` needs; serialised into the manifest."""

    model: ModelSpec
    out_dir: Path
    target: str = "onnxruntime"
    device: str | None = None  # backend device: ONNX Runtime provider ("cpu", "cuda") or OpenVINO device ("CPU")
    tolerance: float = FP32_TOLERANCE
    rtol: float = FP32_RTOL
    simplify: bool = True
    parity_samples: int = 8
    validate: bool = True
    max_overall_drop: float = 1.0
    max_class_drop: float = 3.0
    latency: bool = True
    latency_batch: int = 1
    latency_iterations: int = 30
    compress: str | None = None  # a registered compression pass ("svd", "spatial-svd", "tucker")
    budget: str = "3x"  # MACs reduction factor for a low-rank pass
    prune_ratio: float = 0.5  # share of channels a pruning pass removes from every prunable group
    compress_exclude: tuple[str, ...] = ()  # layer name globs kept as they are
    data: str | None = None  # labelled images for the guard rails (default: the reference model's held-out set)
    labels: str | None = None
    task: str | None = None
    classes: tuple[str, ...] | None = None
    precision: str = "fp32"  # "fp32" | "int8" (one QDQ ONNX calibrated on real images)
    calib: str | None = None  # calibration images (default: the reference model's bundled ones)
    calib_samples: int = 256
    calib_method: str = "minmax"

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.target not in TARGETS:
            raise InputError(f"unknown target '{self.target}'; choose one of: {', '.join(TARGETS)}")
        if self.tolerance <= 0 or self.rtol < 0:
            raise InputError("--tolerance must be positive and --rtol not negative")
        if self.parity_samples < 1 or self.latency_batch < 1:
            raise InputError("the number of parity samples and --batch must be at least 1")
        if self.precision not in ("fp32", "int8"):
            raise InputError(f"--precision must be fp32 or int8, got '{self.precision}'")
        if self.calib_samples < 1:
            raise InputError("--calib-samples must be at least 1")
        if not self.model.dynamic_batch and self.latency_batch != 1:
            raise InputError("--static-batch exports batch 1; use --batch 1 or drop --static-batch")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "target": self.target, "device": self.device,
                "tolerance": self.tolerance, "rtol": self.rtol, "simplify": self.simplify, "parity_samples": self.parity_samples,
                "guard_rails": {"max_overall_drop": self.max_overall_drop, "max_class_drop": self.max_class_drop},
                "latency_batch": self.latency_batch,
                "precision": self.precision,
                "compression": {"method": self.compress, "budget": self.budget, "prune_ratio": self.prune_ratio,
                                "exclude": list(self.compress_exclude)}
                if self.compress else None}


Stage = Callable[[str], ContextManager[None]]


@contextlib.contextmanager
def _quiet_stage(name: str):
    yield


@dataclass
class BuildReport:
    """What a build did and measured; written as report.json and report.md."""

    model: str
    target: str
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "target": self.target, "stage_seconds": self.stages, **self.data}


def run_build(config: BuildConfig, stage: Stage = _quiet_stage) -> BuildReport:
    """Run the whole chain for one target; raise a MedexportError (one line) on the first failure."""
    # check the backend first: a missing TensorRT should fail before minutes of work
    get_backend(config.target)
    out = config.out_dir
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")

    report = BuildReport(model="?", target=config.target)
    timed = _timer(report, stage)
    with timed("load"):
        loaded = load_model(config.model)
        data = _labelled_data(loaded, config)
        if config.precision == "int8":  # no real calibration data is an error before any work
            calibration, calibration_source = _calibration_images(loaded, config.calib, config.calib_samples)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # the folder is not a verified build until we finish
    report.model = loaded.name
    report.data["input"] = {"shape": list(loaded.input_shape), "layout": LAYOUTS[len(loaded.input_shape)],
                            "dtype": "float32", "dynamic_batch": config.model.dynamic_batch}
    report.data["provenance"] = loaded.provenance

    original = loaded.module
    if config.compress:
        with timed(f"compress ({config.compress} {config.budget})"):
            report.data["compression"] = _compress(loaded, config)
    if loaded.module is not None:
        with timed("profile"):
            report.data["profile"] = _profile(loaded)["totals"]

    onnx_path = out / ("model.compressed.onnx" if config.compress else "model.onnx")
    with timed("export"):
        report.data["export"] = _export(loaded, onnx_path, config)
    written = [onnx_path, *_external_data(onnx_path)]

    with timed("inputs"):
        inputs, input_source = _parity_inputs(loaded, config.parity_samples)
    report.data["parity_inputs"] = {"count": int(inputs.shape[0]), "source": input_source}
    reference = reference_runner(loaded, onnx_path)
    with timed("reference"):
        ref_out = _run_batched(reference, inputs)
    int8 = config.precision == "int8"
    if loaded.module is not None and (config.target != "onnxruntime" or int8):  # else the backend parity is this
        with timed("onnx parity"):
            report.data["onnx_parity"] = _parity(onnx_path, ref_out, inputs, config, "exported ONNX")
    source = onnx_path
    if int8:
        with timed(f"quantize ({config.calib_method})"):
            report.data["calibration"] = _quantize(onnx_path, calibration, data, config)
        report.data["calibration"]["calibration_data"] = calibration_source
        source = out / "model.int8.qdq.onnx"
        written.append(source)

    with timed(f"build {config.target}"):
        result = make_builder(config.target, device=config.device,
                              max_batch=max(8, config.latency_batch)).build(source, out)
    report.data["build"] = result.to_dict()
    written += [f for f in result.files if f not in written]

    runner = open_runner(result.artifact, config.target, device=config.device)
    try:
        if int8:
            report.data["backend_parity"] = {"not_applicable": "an INT8 artifact is judged by the guard rails "
                                                                "against the FP32 original"}
        elif loaded.module is None and config.target == "onnxruntime":
            report.data["backend_parity"] = {"not_applicable": "the artifact is the input ONNX file itself"}
        else:
            with timed(f"{config.target} parity"):
                parity = _compare(ref_out, _run_batched(runner, inputs), config)
                report.data["backend_parity"] = parity.to_dict()
                _reject_on_failure(result.files, onnx_path,
                                   lambda: parity.raise_if_failed(f"the {config.target} artifact"))
        if data is None or not config.validate:
            report.data["validation"] = {"skipped": "guard rails not run: no labelled data (pass --data, or use a "
                                                    "reference model)" if config.validate else "--no-validate"}
        else:
            with timed("validate"):
                report.data["validation"] = _validate(_original_runner(loaded, original, reference), runner, data,
                                                      config)
            rails = report.data["validation"]["guard_rails"]
            if not rails["passed"]:
                _write_reports(out, report)
                _reject_on_failure(result.files, onnx_path, lambda: _raise_guard_rail(rails))
        if config.latency:
            with timed("latency"):
                report.data["latency"] = _latency(runner, reference, loaded, config)
    finally:
        runner.close()

    from medexport.benchmarks import environment

    report.data["environment"] = environment()
    written += _write_reports(out, report)
    _write_manifest(out, config, loaded, report, written)
    return report


def _quantize(onnx_path: Path, calibration: np.ndarray, data, config: BuildConfig) -> dict:
    """One QDQ ONNX beside ``onnx_path``; with labelled data, sensitive layers stay float until the rails hold."""
    from medexport.calibration.quantize import QuantConfig, quantize_qdq, quantize_with_guard_rails
    from medexport.evaluation import GuardRails

    dest = onnx_path.with_name("model.int8.qdq.onnx")
    quant = QuantConfig(method=config.calib_method)
    if data is None:
        return {"quantization": quantize_qdq(onnx_path, calibration, dest, quant).to_dict()}
    rails = GuardRails(config.max_overall_drop, config.max_class_drop)
    return quantize_with_guard_rails(onnx_path, calibration, dest, data, rails, quant).to_dict()


def _labelled_data(loaded: LoadedModel, config: BuildConfig):
    """Labelled images for the guard rails: the user's --data, else the reference model's held-out set."""
    from medexport.evaluation.validation import reference_data, user_data

    if config.data is not None:
        return user_data(config.data, config.labels, loaded.input_shape, task=config.task, classes=config.classes,
                         reference_model=loaded.reference)
    return reference_data(loaded.reference) if loaded.reference is not None else None


def _external_data(onnx_path: Path) -> list[Path]:
    data = onnx_path.with_name(onnx_path.name + ".data")
    return [data] if data.is_file() else []


def run_export(config: BuildConfig, stage: Stage = _quiet_stage) -> dict[str, Any]:
    """Only the first stages: load, export ``model.onnx`` into ``config.out_dir``, parity against torch."""
    loaded = load_model(config.model)
    onnx_path = config.out_dir / "model.onnx"
    with stage("export"):
        info = _export(loaded, onnx_path, config)
    if loaded.module is None:
        info["parity"] = None  # an ONNX input has no torch model to compare with
    else:
        with stage("parity"):
            inputs, _ = _parity_inputs(loaded, config.parity_samples)
            ref_out = _run_batched(reference_runner(loaded, onnx_path), inputs)
            info["parity"] = _parity(onnx_path, ref_out, inputs, config, "exported ONNX")
    info["path"] = str(onnx_path)
    return info


def run_quantize(config: BuildConfig, quant, calib: str | None, max_samples: int,
                 stage: Stage = _quiet_stage) -> dict[str, Any]:
    """Export, calibrate on real images, write ``model.int8.qdq.onnx``; for reference models, keep sensitive
    layers in float until the guard rails hold on the held-out images. Returns the calibration recipe."""
    from medexport.calibration.quantize import quantize_qdq, quantize_with_guard_rails

    loaded = load_model(config.model)
    with stage("calibration images"):  # before any work: no real data is an error, never random data
        images, source = _calibration_images(loaded, calib, max_samples)
    onnx_path = config.out_dir / "model.onnx"
    with stage("export"):
        _export(loaded, onnx_path, config)
    if loaded.module is not None:
        with stage("parity"):
            inputs, _ = _parity_inputs(loaded, config.parity_samples)
            _parity(onnx_path, _run_batched(reference_runner(loaded, onnx_path), inputs), inputs, config,
                    "exported ONNX")
    dest = config.out_dir / "model.int8.qdq.onnx"
    with stage("quantize"):
        if loaded.reference is not None:
            from medexport.evaluation import GuardRails
            from medexport.evaluation.validation import reference_data

            rails = GuardRails(config.max_overall_drop, config.max_class_drop)
            recipe = quantize_with_guard_rails(onnx_path, images, dest, reference_data(loaded.reference), rails,
                                               quant).to_dict()
        else:
            recipe = {"quantization": quantize_qdq(onnx_path, images, dest, quant).to_dict()}
    recipe["calibration_data"] = source
    write_json(config.out_dir / "quantize.json", recipe)
    return recipe


def _calibration_images(loaded: LoadedModel, calib: str | None, max_samples: int) -> tuple[np.ndarray, dict]:
    """Real calibration images: the user's folder, or the reference model's bundled training-side images."""
    from medexport.errors import DataError

    if calib is not None:
        from medexport.calibration import PreprocessSpec, load_images

        spec = PreprocessSpec(spatial_size=tuple(loaded.input_shape[2:]), channels=loaded.input_shape[1])
        dataset = load_images(calib, spec, max_samples=max_samples, progress=True)
        return dataset.images, dataset.manifest()
    if loaded.reference is None:
        raise DataError("no calibration data: pass --calib with a folder of real images "
                        "(medexport never calibrates on random data)")
    images = loaded.reference.calibration()[:max_samples]
    return images, {"count": int(len(images)), "source": f"bundled calibration images of {loaded.reference.name}"}


def run_compress(config: BuildConfig, stage: Stage = _quiet_stage) -> dict[str, Any]:
    """Compress, export ``model.compressed.onnx``, check parity with the compressed torch model, and (for
    reference models) validate against the ORIGINAL model with the guard rails. Writes ``compress.json``."""
    from medexport.errors import GuardRailError

    if not config.compress:
        raise InputError("no compression method given")
    loaded = load_model(config.model)
    if loaded.module is None:
        raise InputError("compression rewrites torch layers; give a torch model, not an ONNX file")
    original = loaded.module
    with stage(f"compress ({config.compress} {config.budget})"):
        result: dict[str, Any] = {"compression": _compress(loaded, config)}
    onnx_path = config.out_dir / "model.compressed.onnx"
    with stage("export"):
        result["export"] = _export(loaded, onnx_path, config)
    with stage("parity"):
        inputs, _ = _parity_inputs(loaded, config.parity_samples)
        compressed = reference_runner(loaded, onnx_path)
        result["onnx_parity"] = _parity(onnx_path, _run_batched(compressed, inputs), inputs, config, "compressed ONNX")
    data = _labelled_data(loaded, config)
    if data is not None and config.validate:
        with stage("validate against the original"):
            result["validation"] = _validate(_original_runner(loaded, original, compressed), compressed, data, config,
                                             artifact=onnx_path.name)
    write_json(config.out_dir / "compress.json", result)
    rails = (result.get("validation") or {}).get("guard_rails")
    if rails and not rails["passed"]:
        raise GuardRailError(rails["message"] + " (relax with --max-overall-drop/--max-class-drop, or compress less)")
    return result


def _compress(loaded: LoadedModel, config: BuildConfig) -> dict:
    """Replace ``loaded.module`` by its compressed copy; return the pass record."""
    from medexport.compression import LowRankConfig, get_pass, parse_budget
    from medexport.compression.pruning import PruneConfig

    if loaded.module is None:
        raise InputError("compression rewrites torch layers; give a torch model, not an ONNX file")
    compression = get_pass(config.compress)
    if compression.family == "pruning":
        pass_config = PruneConfig(ratio=config.prune_ratio, exclude=tuple(config.compress_exclude))
    else:
        pass_config = LowRankConfig(budget=parse_budget(config.budget), exclude=tuple(config.compress_exclude))
    loaded.module, record = compression.apply(loaded.module, (1, *loaded.input_shape[1:]), pass_config)
    return record.to_dict()


def _original_runner(loaded: LoadedModel, original, fallback):
    """The uncompressed model, which guard rails compare against; ``fallback`` when nothing was compressed."""
    if original is None or original is loaded.module:
        return fallback
    from medexport.runtimes.torch import Runner

    return Runner(original, loaded.input_shape)


def _timer(report: BuildReport, stage: Stage):
    @contextlib.contextmanager
    def timed(name: str):
        start = time.perf_counter()
        with stage(name):
            yield
        report.stages[name] = round(time.perf_counter() - start, 3)

    return timed


def _profile(loaded: LoadedModel) -> dict:
    from medexport.graph import capture, profile

    return profile(capture(loaded.module, (1, *loaded.input_shape[1:]))).to_dict()


def _export(loaded: LoadedModel, onnx_path: Path, config: BuildConfig) -> dict:
    from medexport.exporter.onnx_export import describe_onnx, export_onnx

    if loaded.module is None:
        if loaded.onnx_path.resolve() != onnx_path.resolve():
            from medexport._io import atomic_path

            for name in _external_files(loaded.onnx_path):  # weights stored beside a large ONNX come along
                with atomic_path(onnx_path.parent / name) as tmp:
                    shutil.copyfile(loaded.onnx_path.parent / name, tmp)
            with atomic_path(onnx_path) as tmp:
                shutil.copyfile(loaded.onnx_path, tmp)
        return describe_onnx(onnx_path).to_dict()
    shape = (1, *loaded.input_shape[1:])
    return export_onnx(loaded.module, shape, onnx_path, dynamic_batch=config.model.dynamic_batch,
                       simplify=config.simplify).to_dict()


def _external_files(onnx_path: Path) -> list[str]:
    """File names an ONNX model keeps its external tensors in."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    names = {entry.value for t in proto.graph.initializer for entry in t.external_data if entry.key == "location"}
    return sorted(names)


def _parity_inputs(loaded: LoadedModel, n: int) -> tuple[np.ndarray, str]:
    """Real images for parity: the reference model's held-out images, or bundled real images resized."""
    if loaded.reference is not None:
        images, _ = loaded.reference.heldout()
        if tuple(images.shape[1:]) == tuple(loaded.input_shape[1:]):
            return images[:n].astype(np.float32), f"held-out images of {loaded.reference.name}"
    from medexport.zoo.samples import real_inputs

    return real_inputs(tuple(loaded.input_shape), n), "bundled real MRI images resized to the input shape"


def reference_runner(loaded: LoadedModel, onnx_path: Path):
    """torch for torch models; ONNX Runtime on the ONNX itself when the user started from an ONNX file."""
    if loaded.module is not None:
        from medexport.runtimes.torch import Runner

        return Runner(loaded.module, loaded.input_shape)
    from medexport.runtimes.onnxruntime import Runner

    return Runner(onnx_path)


def _run_batched(runner, inputs: np.ndarray, batch: int = 4) -> np.ndarray:
    fixed = runner.input_shape[0]
    step = fixed if fixed else batch
    return np.concatenate([runner.infer(inputs[i:i + step]) for i in range(0, len(inputs), step)])


def _compare(reference: np.ndarray, candidate: np.ndarray, config: BuildConfig):
    from medexport.exporter.parity import compare_outputs

    return compare_outputs(reference, candidate, tolerance=config.tolerance, rtol=config.rtol)


def _parity(onnx_path: Path, ref_out: np.ndarray, inputs: np.ndarray, config: BuildConfig, what: str) -> dict:
    from medexport.runtimes.onnxruntime import Runner

    with Runner(onnx_path) as ort_runner:
        parity = _compare(ref_out, _run_batched(ort_runner, inputs), config)
    _reject_on_failure([onnx_path], onnx_path, lambda: parity.raise_if_failed(what))
    return parity.to_dict()


def _reject_on_failure(files: list[Path], onnx_path: Path, check: Callable[[], None]) -> None:
    """Run ``check``; if it raises, delete the artifact files it judged (never the source ONNX) and re-raise."""
    try:
        check()
    except MedexportError:
        for f in files:
            if f != onnx_path or len(files) == 1:
                f.unlink(missing_ok=True)
        raise


def _validate(reference, runner, data, config: BuildConfig, artifact: str | None = None) -> dict:
    from medexport.evaluation import GuardRails
    from medexport.evaluation.validation import validate_against

    rails = GuardRails(config.max_overall_drop, config.max_class_drop)
    return validate_against(reference, runner, data, rails, artifact=artifact or config.target)


def _raise_guard_rail(rails: dict) -> None:
    from medexport.errors import GuardRailError

    raise GuardRailError(rails["message"])


def _latency(runner, reference, loaded: LoadedModel, config: BuildConfig) -> dict:
    from medexport.benchmarks import busy_warning, measure_latency
    from medexport.zoo.samples import real_inputs

    warning = busy_warning()
    batch = real_inputs((config.latency_batch, *loaded.input_shape[1:]), config.latency_batch)
    kwargs = {"iterations": config.latency_iterations, "min_seconds": 1.0}
    artifact = measure_latency(runner.infer, batch, **kwargs)
    baseline = measure_latency(reference.infer, batch, **kwargs)
    return {
        config.target: artifact.to_dict(),
        f"reference ({reference.backend})": baseline.to_dict(),
        "speedup_vs_reference": round(baseline.median_ms / artifact.median_ms, 3),
        "devices": runner.devices(),
        "warning": warning,
    }


def _write_reports(out: Path, report: BuildReport) -> list[Path]:
    from medexport.benchmarks.report import build_markdown

    return [write_json(out / "report.json", report.to_dict()),
            write_text(out / "report.md", build_markdown(report.to_dict()))]


def _write_manifest(out: Path, config: BuildConfig, loaded: LoadedModel, report: BuildReport,
                    written: list[Path]) -> None:
    """The manifest lists exactly the files this build wrote; anything else in the folder is not vouched for."""
    files = sorted(set(written))
    data = report.to_dict()
    manifest = {
        "medexport_manifest": 1,
        "model": loaded.name,
        "provenance": loaded.provenance,
        "input": data["input"],
        "outputs": data["export"].get("outputs"),
        "preprocessing": _preprocessing(loaded),
        "compression": data.get("compression"),
        "calibration": _calibration_summary(data.get("calibration")),
        "target": config.target,
        "artifact": data["build"]["artifact"],
        "config": config.to_dict(),
        "parity": {"onnx": data.get("onnx_parity"), config.target: data.get("backend_parity")},
        "metrics": _metrics_summary(data.get("validation")),
        "latency": data.get("latency"),
        "environment": data.get("environment"),
        "files": {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files},
    }
    write_json(out / "manifest.json", manifest)


def _preprocessing(loaded: LoadedModel) -> dict | None:
    """What the deployed model expects of its input; known for reference models, the user's to state otherwise."""
    ref = loaded.reference
    if ref is None:
        return None
    return {"spacing_mm": list(ref.spacing) if ref.spacing else None, "intensity_range": [0.0, 1.0],
            "sliding_window_roi": list(ref.roi_size) if ref.roi_size else None, "model_card": ref.card}


def _calibration_summary(recipe: dict | None) -> dict | None:
    """The calibration recipe for the manifest: method, image count and hash, data manifest, float layers."""
    if recipe is None:
        return None
    keep = ("quantization", "float_layers", "calibration_data")
    return {k: recipe[k] for k in keep if k in recipe}


def _metrics_summary(validation: dict | None) -> dict | None:
    if not validation or "skipped" in validation:
        return validation
    return {"reference": validation["reference"]["overall"], "artifact": validation["artifact"]["overall"],
            "guard_rails": {k: validation["guard_rails"][k] for k in ("passed", "rows")}}
