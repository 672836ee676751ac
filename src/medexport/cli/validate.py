"""`medexport validate`: compare an artifact with the original model on labelled real images."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import console, model_options, model_spec, stage_printer


@click.command("validate")
@click.argument("artifact", type=click.Path())
@model_options
@click.option("--target", default=None, help="Backend of ARTIFACT (default: from the file: .onnx, .xml, .plan).")
@click.option("--device", default=None, help="ONNX Runtime provider or OpenVINO device.")
@click.option("--data", "data_path", default=None,
              help="Labelled images: an .npz with 'images' and 'labels' arrays, or an image folder/file "
                   "(with --labels for masks). Default: the reference model's held-out images.")
@click.option("--labels", "labels_path", default=None, help="Mask files/folder paired with --data (segmentation).")
@click.option("--task", type=click.Choice(["segmentation", "classification"]), default=None,
              help="Task of a non-reference model.")
@click.option("--classes", default=None, help="Class names, comma separated (segmentation: background first).")
@click.option("--max-overall-drop", type=float, default=1.0, show_default=True, help="Percentage points.")
@click.option("--max-class-drop", type=float, default=3.0, show_default=True, help="Percentage points.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for validation.json/.md (default: the artifact's folder).")
def command(artifact, target, device, data_path, labels_path, task, classes, max_overall_drop, max_class_drop,
            report_dir, **model_kw) -> None:
    """Run ARTIFACT and the original model on the same labelled images; fail if a guard rail breaks."""
    from medexport._io import write_json, write_text
    from medexport.benchmarks.run import open_runner, target_for
    from medexport.errors import GuardRailError
    from medexport.evaluation import GuardRails
    from medexport.evaluation.validation import validate_against
    from medexport.loading import load_model
    from medexport.pipeline import reference_runner

    artifact = Path(artifact)
    rails = GuardRails(max_overall_drop, max_class_drop)  # validate limits before any work
    out = console()
    stage = stage_printer(out)
    with stage("load"):
        loaded = load_model(model_spec(**model_kw))
        data = _labelled_data(loaded, data_path, labels_path, task, classes)
    target = target or target_for(artifact)
    with open_runner(artifact, target, device=device) as runner, stage("validate"):
        reference = reference_runner(loaded, loaded.onnx_path or artifact)
        result = validate_against(reference, runner, data, rails, artifact=artifact.name)
    folder = Path(report_dir) if report_dir else artifact.parent
    write_json(folder / "validation.json", {"artifact": artifact.name, "target": target, **result})
    write_text(folder / "validation.md", _markdown(artifact.name, result))
    out.print(result["table"])
    out.print(f"wrote {folder / 'validation.json'} and validation.md")
    if not result["guard_rails"]["passed"]:
        raise GuardRailError(result["guard_rails"]["message"])


def _labelled_data(loaded, data_path, labels_path, task, classes):
    from medexport.errors import InputError
    from medexport.evaluation.validation import LabelledData, reference_data

    if data_path is None:
        if loaded.reference is None:
            raise InputError("--data is required for a model that is not a bundled reference model")
        return reference_data(loaded.reference)
    ref = loaded.reference
    task = task or (ref.task if ref else None)
    names = [c.strip() for c in classes.split(",")] if classes else (list(ref.classes) if ref else None)
    if task is None or not names:
        raise InputError("--task and --classes are required with --data for a non-reference model")
    images, labels = _read_labelled(Path(data_path), labels_path, loaded.input_shape)
    return LabelledData(images, labels, task, names, f"{len(images)} images from {Path(data_path).name}",
                        roi_size=ref.roi_size if ref else None, spacing=ref.spacing if ref else None)


def _read_labelled(path: Path, labels_path, input_shape):
    import numpy as np

    from medexport.errors import DataError

    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        with np.load(path) as npz:
            if "images" not in npz or "labels" not in npz:
                raise DataError(f"{path.name} must hold 'images' and 'labels' arrays")
            images, labels = npz["images"].astype(np.float32), npz["labels"].astype(np.int64)
        if tuple(images.shape[1:]) != tuple(input_shape[1:]):
            raise DataError(f"images in {path.name} are {images.shape[1:]}, the model expects {tuple(input_shape[1:])}")
        if not np.isfinite(images).all():
            raise DataError(f"{path.name} contains NaN or Inf images")
        return images, labels
    if labels_path is None:
        raise DataError("--labels is required with an image folder (masks paired with the images)")
    from medexport.calibration import PreprocessSpec, load_labeled

    spec = PreprocessSpec(spatial_size=tuple(input_shape[2:]), channels=input_shape[1])
    dataset = load_labeled(path, labels_path, spec)
    return dataset.images, dataset.labels


def _markdown(name: str, result: dict) -> str:
    return "\n".join([f"# Validation of {name}", "", f"Data: {result['data']}", "", result["table"], "",
                      "## Original model", "", result["reference_table"], "", "## Artifact", "",
                      result["artifact_table"], ""])
