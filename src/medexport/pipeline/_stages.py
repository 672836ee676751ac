"""The stages the verbs share: export (checked against the reference), parity, quantization, validation.

Each function does one stage on a :class:`~medexport.pipeline.context.RunContext` and returns JSON-able facts;
the verbs in ``build`` and ``verbs`` are compositions of them (compression is ``_compress``).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from medexport.errors import InputError, MedexportError, ParityError
from medexport.pipeline.context import RunContext, run_batched


def profile_cost(ctx: RunContext) -> dict:
    from medexport.graph import capture, profile

    loaded = ctx.loaded
    return profile(capture(loaded.module, (1, *loaded.input_shape[1:]))).to_dict()


def export(ctx: RunContext, onnx_path: Path) -> dict:
    """The model as it is now (compressed or not) as a checked ONNX at ``onnx_path``; an ONNX input is copied."""
    from medexport.exporter.onnx_export import describe_onnx, export_onnx

    loaded, config = ctx.loaded, ctx.config
    if loaded.module is None:
        if loaded.onnx_path.resolve() != onnx_path.resolve():
            from medexport._io import atomic_path

            for name in external_files(loaded.onnx_path):  # weights stored beside a large ONNX come along
                with atomic_path(onnx_path.parent / name) as tmp:
                    shutil.copyfile(loaded.onnx_path.parent / name, tmp)
            with atomic_path(onnx_path) as tmp:
                shutil.copyfile(loaded.onnx_path, tmp)
        return describe_onnx(onnx_path).to_dict()
    return export_onnx(loaded.module, (1, *loaded.input_shape[1:]), onnx_path,
                       dynamic_batch=config.model.dynamic_batch, simplify=config.simplify).to_dict()


def export_checked(ctx: RunContext, onnx_path: Path, what: str, check: bool = True) -> dict:
    """Export, then (for a torch model, unless ``check`` is False) FP32 parity of the ONNX against the torch model
    on real images; a failing ONNX is removed. The facts of both, parity under ``onnx_parity``."""
    with ctx.stage("export"):
        info = export(ctx, onnx_path)
    if ctx.loaded.module is not None and check:
        with ctx.stage(f"{what} parity"):
            info["onnx_parity"] = check_parity(ctx, onnx_path, what)
    return info


def external_files(onnx_path: Path) -> list[str]:
    """File names an ONNX model keeps its external tensors in."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    names = {entry.value for t in proto.graph.initializer for entry in t.external_data if entry.key == "location"}
    return sorted(names)


def compare(ctx: RunContext, candidate: np.ndarray, onnx_path: Path):
    """Parity of ``candidate`` outputs on the parity inputs against the float64 torch model (or, where that cannot
    run, the reference's FP32 outputs), with torch's own FP32 error as the measure of float noise."""
    from medexport.exporter.parity import compare_outputs

    parity = ctx.config.parity
    fp32, exact = ctx.reference_outputs(onnx_path), ctx.exact_outputs()
    return compare_outputs(fp32 if exact is None else exact, candidate, tolerance=parity.tolerance, rtol=parity.rtol,
                           float32_reference=None if exact is None else fp32, noise_factor=parity.noise_factor,
                           min_agreement=parity.min_agreement)


def judge(ctx: RunContext, parity, onnx_path: Path, backend: str, files: list[Path], what: str) -> dict:
    """Raise (removing ``files``) if ``parity`` failed, naming the first ONNX node where ``backend`` leaves the
    torch model on the worst input; the parity facts otherwise. The search runs only on failure."""
    if not parity.passed and ctx.loaded.module is not None:
        from medexport.exporter.divergence import first_divergence

        worst = parity.worst_input
        runs = backend if backend in ("onnxruntime", "openvino") else "onnxruntime"  # can show intermediates
        try:
            parity.diverging = first_divergence(ctx.loaded.module, onnx_path,
                                                ctx.parity_inputs()[0][worst:worst + 1], runs)
        except Exception as exc:  # noqa: BLE001 - the verdict stands; only its explanation is missing
            parity.diverging = {"node": None, "message": f"the diverging node could not be found "
                                                         f"({type(exc).__name__}: {str(exc)[:120]})"}
    reject_on_failure(files, onnx_path, lambda: parity.raise_if_failed(what))
    return parity.to_dict()


def agreement(ctx: RunContext, candidate: np.ndarray, onnx_path: Path, precision: str) -> dict:
    """How far an FP16/INT8 artifact moves the FP32 model's outputs and decisions on the parity images. Not a gate:
    the guard rails judge it on labelled images; but every build says it, with labels or without."""
    from medexport.exporter.parity import decision_agreement

    reference = np.asarray(ctx.reference_outputs(onnx_path), dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ParityError(f"the {precision.upper()} artifact's output shape {candidate.shape} differs from the "
                             f"model's {reference.shape}")
    return {"not_applicable": f"an {precision.upper()} artifact is judged by the guard rails against the FP32 "
                              "original, not by a float tolerance",
            "max_abs_error": float(np.abs(reference - candidate).max()),
            "output_range": float(np.abs(reference).max()),
            "decisions": decision_agreement(reference, candidate), "n_inputs": int(len(reference))}


def check_parity(ctx: RunContext, onnx_path: Path, what: str) -> dict:
    """The ONNX on ONNX Runtime against the reference on the parity inputs; the ONNX is removed if it fails."""
    from medexport.runtimes import open_runner

    with open_runner(onnx_path, "onnxruntime") as ort_runner:
        parity = compare(ctx, run_batched(ort_runner, ctx.parity_inputs()[0]), onnx_path)
    return judge(ctx, parity, onnx_path, "onnxruntime", [onnx_path], what)


def reject_on_failure(files: list[Path], onnx_path: Path, check: Callable[[], None]) -> None:
    """Run ``check``; if it raises, delete the artifact files it judged (never the source ONNX) and re-raise."""
    try:
        check()
    except MedexportError:
        for f in files:
            if f != onnx_path or len(files) == 1:
                f.unlink(missing_ok=True)
        raise


def validate(ctx: RunContext, reference, runner, artifact: str | None = None) -> dict:
    """``runner`` against ``reference`` on the labelled images, per class, with the run's guard rails."""
    from medexport.evaluation.validation import validate_against

    result = validate_against(reference, runner, ctx.labelled(), ctx.rails, artifact=artifact or ctx.config.target)
    if any(getattr(config, "rollback", False) for _, config in ctx.config.passes):
        result["note"] = ("the guard-railed compression search chose its steps on these same images, so this check "
                          "is not independent: confirm on other labelled images with `medexport validate --data`")
    return result


def raise_guard_rail(rails: dict) -> None:
    from medexport.errors import GuardRailError

    raise GuardRailError(rails["message"])


def original_runner(ctx: RunContext, fallback):
    """The uncompressed model, which guard rails compare against; ``fallback`` when nothing was compressed."""
    if not ctx.compressed:
        return fallback
    from medexport.runtimes.torch import Runner

    return Runner(ctx.original, ctx.loaded.input_shape)


def quantize(ctx: RunContext, onnx_path: Path) -> dict:
    """One QDQ ONNX beside ``onnx_path``; with labelled data, sensitive layers stay float until the rails hold.
    With the nncf engine: NNCF's OpenVINO IR instead (accuracy-controlled on the labelled data if asked)."""
    from medexport.calibration.quantize import QuantConfig, quantize_qdq, quantize_with_guard_rails

    quant, calibration, data = ctx.config.quantization, ctx.calibration(), ctx.labelled()
    if quant.engine == "nncf":
        from medexport.calibration.nncf_ptq import NNCF_FILENAME, overall_metric, quantize_nncf

        if quant.accuracy_control and data is None:
            raise InputError("--accuracy-control needs labelled data (--data, or a reference model)")
        control = {"metric": overall_metric(data), "validation": list(data.images[:1]),
                   "max_drop_points": ctx.rails.max_overall_drop} if quant.accuracy_control else {}
        result = {"quantization": quantize_nncf(onnx_path, calibration, onnx_path.with_name(NNCF_FILENAME),
                                                **control).to_dict()}
    else:
        dest = onnx_path.with_name("model.int8.qdq.onnx")
        qconfig = QuantConfig(method=quant.method, nodes_to_exclude=quant.exclude, layout=ctx.config.int8_layout)
        result = (quantize_with_guard_rails(onnx_path, calibration, dest, data, ctx.rails, qconfig).to_dict()
                  if data is not None else {"quantization": quantize_qdq(onnx_path, calibration, dest, qconfig).to_dict()})
    result["calibration_data"] = ctx.calibration_source()
    return result


def ir_result(xml: Path, device: str | None):
    """The BuildResult of an OpenVINO IR written by NNCF: compiled once, as the OpenVINO builder does."""
    from medexport.runtimes import BuildResult, open_runner

    with open_runner(xml, "openvino", device=device, precision="int8") as runner:
        info = runner.describe()
    return BuildResult("openvino", xml, [xml, xml.with_suffix(".bin")], info)
