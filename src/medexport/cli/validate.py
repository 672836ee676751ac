"""`medexport validate`: compare an artifact with the original model on labelled real images."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import (console, data_config, data_options, model_options, model_spec, rail_options,
                                    stage_printer, target_option)


@click.command("validate")
@click.argument("artifact", type=click.Path())
@model_options
@target_option(None, "Backend of ARTIFACT (default: from the file's suffix).")
@click.option("--device", default=None, help="ONNX Runtime provider or OpenVINO device.")
@data_options
@rail_options
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for validation.json/.md (default: the artifact's folder).")
@click.option("--no-verify", is_flag=True,
              help="Run even if ARTIFACT's build folder no longer matches the sha256 in its manifest.json.")
def command(artifact, target, device, data_path, labels_path, task, classes, max_overall_drop, max_class_drop,
            report_dir, no_verify, **model_kw) -> None:
    """Run ARTIFACT and the original model (--model; default: the bundled reference) on the same labelled
    images; fail if a guard rail breaks. An artifact in a build folder is first checked against the sha256 its
    manifest recorded."""
    from medexport._io import write_json, write_text
    from medexport.errors import GuardRailError, ModelLoadError
    from medexport.evaluation import GuardRails
    from medexport.pipeline import BuildConfig, run_validate
    from medexport.pipeline._outdir import check_out
    from medexport.pipeline.manifest import verify_folder
    from medexport.runtimes import resolve_target, target_for

    artifact = Path(artifact)
    if not artifact.is_file():  # before minutes of loading
        raise ModelLoadError(f"artifact not found: {artifact}")
    folder = Path(report_dir) if report_dir else artifact.parent
    check_out(folder, "--report")
    if not no_verify:
        verify_folder(artifact)
    target = resolve_target(target) if target else target_for(artifact)
    config = BuildConfig(model=model_spec(**model_kw), out_dir=artifact.parent, target=target, device=device,
                         rails=GuardRails(max_overall_drop, max_class_drop),
                         data=data_config(data_path, labels_path, task, classes))
    out = console()
    result = run_validate(config, artifact, stage_printer(out))
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
