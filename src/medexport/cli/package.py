"""`medexport package`: a verified build -> an edge package folder and .tar.gz for one device target."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import RegistryChoice, console
from medexport.runtimes import package_target_choices


@click.command("package")
@click.argument("build", metavar="ARTIFACT_OR_BUILD", type=click.Path())
@click.option("--target", required=True, type=RegistryChoice(package_target_choices),
              help="Device: jetson, trt-workstation (trt), openvino-cpu (ov), onnxruntime (ort).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Package folder (default: out/<model>-<target>-package); the .tar.gz goes beside it.")
def command(build, target, out_dir) -> None:
    """Package the build folder ARTIFACT_OR_BUILD (or the build folder of a file in it) for TARGET: model files,
    run.py (selftest, bench), build_on_device.sh for TensorRT, preprocessing, labels, model card, manifest."""
    import json

    from medexport.packaging import make_package
    from medexport.pipeline.manifest import MANIFEST
    from medexport.runtimes import resolve_package_target

    target = resolve_package_target(target)
    if out_dir is None:
        folder = Path(build) if Path(build).is_dir() else Path(build).parent
        try:
            model = json.loads((folder / MANIFEST).read_text())["model"]
        except (OSError, ValueError, KeyError, TypeError):
            model = folder.name
        out_dir = Path("out") / f"{model}-{target}-package"
    result = make_package(Path(build), target, Path(out_dir))
    out = console()
    out.print(f"[bold]{result['model']} → {target}[/bold] ({result['precision']}, runs on {result['runtime']}): "
              f"{', '.join(result['models'].values())}")
    out.print(f"wrote {result['folder']}/ and {result['tarball']}")
