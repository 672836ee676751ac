"""The stages the verbs share: export, parity on real images, quantization, validation (compression is
``_compress``, recovery fine-tuning ``_finetune``).

Each function does one stage on a loaded model and returns JSON-able facts; the verbs in ``build`` and
``verbs`` decide the order.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np

from medexport.errors import DataError, InputError, MedexportError
from medexport.loading import LoadedModel
from medexport.pipeline.config import BuildConfig


Stage = Callable[[str], ContextManager[None]]


@contextlib.contextmanager
def quiet_stage(name: str):
    yield


def profile_cost(loaded: LoadedModel) -> dict:
    from medexport.graph import capture, profile

    return profile(capture(loaded.module, (1, *loaded.input_shape[1:]))).to_dict()


def export(loaded: LoadedModel, onnx_path: Path, config: BuildConfig) -> dict:
    from medexport.exporter.onnx_export import describe_onnx, export_onnx

    if loaded.module is None:
        if loaded.onnx_path.resolve() != onnx_path.resolve():
            from medexport._io import atomic_path

            for name in external_files(loaded.onnx_path):  # weights stored beside a large ONNX come along
                with atomic_path(onnx_path.parent / name) as tmp:
                    shutil.copyfile(loaded.onnx_path.parent / name, tmp)
            with atomic_path(onnx_path) as tmp:
                shutil.copyfile(loaded.onnx_path, tmp)
        return describe_onnx(onnx_path).to_dict()
    shape = (1, *loaded.input_shape[1:])
    return export_onnx(loaded.module, shape, onnx_path, dynamic_batch=config.model.dynamic_batch,
                       simplify=config.simplify).to_dict()


def external_files(onnx_path: Path) -> list[str]:
    """File names an ONNX model keeps its external tensors in."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    names = {entry.value for t in proto.graph.initializer for entry in t.external_data if entry.key == "location"}
    return sorted(names)


def parity_inputs(loaded: LoadedModel, n: int) -> tuple[np.ndarray, str]:
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


def run_batched(runner, inputs: np.ndarray, batch: int = 4) -> np.ndarray:
    fixed = runner.input_shape[0]
    step = fixed if fixed else batch
    return np.concatenate([runner.infer(inputs[i:i + step]) for i in range(0, len(inputs), step)])


def compare(reference: np.ndarray, candidate: np.ndarray, config: BuildConfig):
    from medexport.exporter.parity import compare_outputs

    return compare_outputs(reference, candidate, tolerance=config.tolerance, rtol=config.rtol)


def check_parity(onnx_path: Path, ref_out: np.ndarray, inputs: np.ndarray, config: BuildConfig, what: str) -> dict:
    from medexport.runtimes.onnxruntime import Runner

    with Runner(onnx_path) as ort_runner:
        parity = compare(ref_out, run_batched(ort_runner, inputs), config)
    reject_on_failure([onnx_path], onnx_path, lambda: parity.raise_if_failed(what))
    return parity.to_dict()


def reject_on_failure(files: list[Path], onnx_path: Path, check: Callable[[], None]) -> None:
    """Run ``check``; if it raises, delete the artifact files it judged (never the source ONNX) and re-raise."""
    try:
        check()
    except MedexportError:
        for f in files:
            if f != onnx_path or len(files) == 1:
                f.unlink(missing_ok=True)
        raise


def labelled_data(loaded: LoadedModel, config: BuildConfig):
    """Labelled images for the guard rails: the user's --data, else the reference model's held-out set."""
    from medexport.evaluation.validation import reference_data, user_data

    if config.data is not None:
        return user_data(config.data, config.labels, loaded.input_shape, task=config.task, classes=config.classes,
                         reference_model=loaded.reference)
    return reference_data(loaded.reference) if loaded.reference is not None else None


def validate(reference, runner, data, config: BuildConfig, artifact: str | None = None) -> dict:
    from medexport.evaluation import GuardRails
    from medexport.pipeline._compress import families
    from medexport.evaluation.validation import validate_against

    rails = GuardRails(config.max_overall_drop, config.max_class_drop)
    result = validate_against(reference, runner, data, rails, artifact=artifact or config.target)
    if config.prune_rollback and "pruning" in families(config):
        result["note"] = ("the guard-railed compression search chose its steps on these same images, so this check "
                          "is not independent: confirm on other labelled images with `medexport validate --data`")
    return result


def raise_guard_rail(rails: dict) -> None:
    from medexport.errors import GuardRailError

    raise GuardRailError(rails["message"])


def calibration_images(loaded: LoadedModel, calib: str | None, max_samples: int) -> tuple[np.ndarray, dict]:
    """Real calibration images: the user's folder, or the reference model's bundled training-side images."""
    if calib is not None:
        from medexport.imaging import PreprocessSpec, load_images

        spec = PreprocessSpec(spatial_size=tuple(loaded.input_shape[2:]), channels=loaded.input_shape[1])
        dataset = load_images(calib, spec, max_samples=max_samples, progress=True)
        return dataset.images, dataset.manifest()
    if loaded.reference is None:
        raise DataError("no calibration data: pass --calib with a folder of real images "
                        "(medexport never calibrates on random data)")
    images = loaded.reference.calibration()[:max_samples]
    return images, {"count": int(len(images)), "source": f"bundled calibration images of {loaded.reference.name}"}


def original_runner(loaded: LoadedModel, original, fallback):
    """The uncompressed model, which guard rails compare against; ``fallback`` when nothing was compressed."""
    if original is None or original is loaded.module:
        return fallback
    from medexport.runtimes.torch import Runner

    return Runner(original, loaded.input_shape)


def quantize(onnx_path: Path, calibration: np.ndarray, data, config: BuildConfig) -> dict:
    """One QDQ ONNX beside ``onnx_path``; with labelled data, sensitive layers stay float until the rails hold.
    With ``int8_engine="nncf"``: NNCF's OpenVINO IR instead (accuracy-controlled on ``data`` if asked)."""
    from medexport.calibration.quantize import QuantConfig, quantize_qdq, quantize_with_guard_rails
    from medexport.evaluation import GuardRails

    if config.int8_engine == "nncf":
        from medexport.calibration.nncf_ptq import NNCF_FILENAME, overall_metric, quantize_nncf

        if config.accuracy_control and data is None:
            raise InputError("--accuracy-control needs labelled data (--data, or a reference model)")
        control = {"metric": overall_metric(data), "validation": list(data.images[:1]),
                   "max_drop_points": config.max_overall_drop} if config.accuracy_control else {}
        return {"quantization": quantize_nncf(onnx_path, calibration, onnx_path.with_name(NNCF_FILENAME),
                                              **control).to_dict()}
    dest = onnx_path.with_name("model.int8.qdq.onnx")
    quant = QuantConfig(method=config.calib_method, nodes_to_exclude=config.int8_exclude, layout=config.int8_layout)
    if data is None:
        return {"quantization": quantize_qdq(onnx_path, calibration, dest, quant).to_dict()}
    rails = GuardRails(config.max_overall_drop, config.max_class_drop)
    return quantize_with_guard_rails(onnx_path, calibration, dest, data, rails, quant).to_dict()


def ir_result(xml: Path, device: str | None):
    """The BuildResult of an OpenVINO IR written by NNCF: compiled once, as the OpenVINO builder does."""
    from medexport.runtimes._base import BuildResult
    from medexport.runtimes.openvino import Runner

    with Runner(xml, device=device or "CPU", precision="int8") as runner:
        info = runner.describe()
    return BuildResult("openvino", xml, [xml, xml.with_suffix(".bin")], info)
