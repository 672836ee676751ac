"""`medexport bench`: latency of a built artifact (ONNX, OpenVINO IR or TensorRT plan)."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import RegistryChoice, console
from medexport.runtimes import artifact_suffixes, target_choices


@click.command("bench")
@click.argument("artifact", type=click.Path())
@click.option("--target", type=RegistryChoice(target_choices), default=None,
              help="Backend (default: from the file's suffix: "
                   f"{', '.join(f'{suffix} {name}' for suffix, name in artifact_suffixes().items())}).")
@click.option("--device", default=None, help="ONNX Runtime provider or OpenVINO device.")
@click.option("--batch", "batches", default="1", show_default=True, help="Batch size(s), comma separated: 1,4,8.")
@click.option("--input-shape", default=None, help="Input shape when the artifact's is dynamic beyond the batch.")
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for the runtime (default: the runtime's choice).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the latency report (default: ARTIFACT.bench.json beside the artifact).")
@click.option("--no-verify", is_flag=True,
              help="Run even if ARTIFACT's build folder no longer matches the sha256 in its manifest.json.")
def command(artifact, target, device, batches, input_shape, iterations, warmup, threads, json_path, no_verify) -> None:
    """Measure median/p90/p99 latency and throughput of ARTIFACT on real images. An artifact in a build folder is
    first checked against the sha256 its manifest recorded."""
    from rich.table import Table

    from medexport._io import write_json
    from medexport.bench.run import bench_artifact
    from medexport.errors import InputError, ModelLoadError
    from medexport.loading import parse_shape
    from medexport.pipeline._outdir import check_out
    from medexport.pipeline.manifest import verify_folder

    sizes = _batch_sizes(batches)
    if input_shape:
        parse_shape(input_shape)   # a malformed shape is an error before the artifact is opened
    if not Path(artifact).is_file():
        raise ModelLoadError(f"artifact not found: {artifact}")
    json_path = Path(json_path) if json_path else Path(artifact).with_name(Path(artifact).name + ".bench.json")
    if json_path.is_dir():
        raise InputError(f"--json {json_path} is a folder: give a file name")
    check_out(json_path.parent, "--json's folder")
    if not no_verify:
        verify_folder(Path(artifact))
    result = bench_artifact(Path(artifact), target=target, device=device, batches=sizes, input_shape=input_shape,
                            iterations=iterations, warmup=warmup, threads=threads)
    write_json(json_path, result)
    table = Table(title=f"{Path(artifact).name} on {result['target']} ({', '.join(result['devices'])})")
    for col in ("batch", "median ms", "p90 ms", "p99 ms", "images/s", "runs"):
        table.add_column(col, justify="right")
    for r in result["latency"]:
        table.add_row(str(r["batch"]), f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
                      f"{r['throughput_per_s']:.1f}", str(r["iterations"]))
    out = console()
    out.file = click.get_text_stream("stdout")
    out.print(table)
    if result["warning"]:
        out.print(f"[yellow]warning:[/yellow] {result['warning']}")
    out.print(f"wrote {json_path}")


def _batch_sizes(text: str) -> list[int]:
    from medexport.errors import InputError

    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise InputError(f"--batch must be integers separated by commas, got '{text}'") from None
    if not sizes or min(sizes) < 1:
        raise InputError("--batch sizes must be at least 1")
    return sizes
