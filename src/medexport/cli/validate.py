"""`medexport validate`: compare an artifact with the original model on labelled real images."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import (console, data_options, model_options, model_spec, rail_options, stage_printer,
                                    target_option)


@click.command("validate")
@click.argument("artifact", type=click.Path())
@model_options
@target_option(None, "Backend of ARTIFACT (default: from the file's suffix).")
@click.option("--device", default=None, help="ONNX Runtime provider or OpenVINO device.")
@data_options
@rail_options
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for validation.json/.md (default: the artifact's folder).")
def command(artifact, target, device, data_path, labels_path, task, classes, max_overall_drop, max_class_drop,
            report_dir, **model_kw) -> None:
    """Run ARTIFACT and the original model (--model; default: the bundled reference) on the same labelled
    images; fail if a guard rail breaks."""
    from medexport._io import write_json, write_text
    from medexport.bench.run import target_for
    from medexport.errors import GuardRailError, ModelLoadError
    from medexport.evaluation import GuardRails
    from medexport.evaluation.validation import reference_data, user_data, validate_against
    from medexport.loading import load_model
    from medexport.pipeline import reference_runner
    from medexport.runtimes import open_runner

    artifact = Path(artifact)
    if not artifact.is_file():  # before minutes of loading
        raise ModelLoadError(f"artifact not found: {artifact}")
    target = target or target_for(artifact)
    rails = GuardRails(max_overall_drop, max_class_drop)
    out = console()
    stage = stage_printer(out)
    with stage("load"):
        loaded = load_model(model_spec(**model_kw))
        if data_path is None:
            if loaded.reference is None:
                from medexport.errors import InputError

                raise InputError("--data is required for a model that is not a bundled reference model")
            data = reference_data(loaded.reference)
        else:
            data = user_data(data_path, labels_path, loaded.input_shape, task=task,
                             classes=classes.split(",") if classes else None, reference_model=loaded.reference)
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


def _markdown(name: str, result: dict) -> str:
    return "\n".join([f"# Validation of {name}", "", f"Data: {result['data']}", "", result["table"], "",
                      "## Original model", "", result["reference_table"], "", "## Artifact", "",
                      result["artifact_table"], ""])
