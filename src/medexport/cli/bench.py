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
@click.option("--device", default=None, help="ONNX Runtime provider (cpu, cuda) or OpenVINO device.")
@click.option("--batch", "batches", default="1", show_default=True, help="Batch size(s), comma separated: 1,4,8 (a sweep).")
@click.option("--input-shape", default=None, help="Input shape when the artifact's is dynamic beyond the batch.")
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed calls at least, per batch size.")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Time budget per batch size: keep timing until both --iterations calls and this many seconds.")
@click.option("--max-seconds", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Stop a slow model after this long per batch size (warm-up included).")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="A fixed number of warm-up calls instead of the stability rule (--warmup-cv).")
@click.option("--warmup-cv", type=click.FloatRange(min=0.001, max=0.99), default=0.05, show_default=True,
              help="Warm up until the last two windows of --warmup-window calls each have a CV (std/mean) of at "
                   "most this and medians within it.")
@click.option("--warmup-window", type=click.IntRange(min=2), default=10, show_default=True)
@click.option("--warmup-max", type=click.IntRange(min=2), default=200, show_default=True,
              help="Most warm-up calls when latency never settles (the result then says so).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for the runtime (default: the runtime's choice).")
@click.option("--mode", type=click.Choice(["latency", "throughput"]), default=None,
              help="OpenVINO performance hint; throughput also runs --nireq async requests (default: latency).")
@click.option("--streams", type=click.IntRange(min=1), default=None, help="OpenVINO CPU streams (default: the hint's).")
@click.option("--nireq", type=click.IntRange(min=1), default=None,
              help="OpenVINO infer requests in flight in throughput mode (default: the device's optimum).")
@click.option("--clients", default=None, help="Contention: client process counts run at once, e.g. 1,2,4.")
@click.option("--client-seconds", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Timed seconds per contention run.")
@click.option("--background-load", type=click.IntRange(min=0), default=0, show_default=True,
              help="Busy-loop processes running beside the contention clients (other applications).")
@click.option("--e2e-input", type=click.Path(exists=True), default=None,
              help="Image file or DICOM folder timed end to end: read, preprocess, infer, postprocess.")
@click.option("--e2e-size", default=None,
              help="Spatial size the --e2e-input is preprocessed to, e.g. 96x96x96 (default: the artifact's input; "
                   "larger is tiled by sliding window).")
@click.option("--e2e-task", type=click.Choice(["segmentation", "classification"]), default="segmentation",
              show_default=True, help="Post-processing of the end-to-end run: argmax label map or softmax.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the latency report (default: ARTIFACT.bench.json beside the artifact).")
@click.option("--no-verify", is_flag=True,
              help="Run even if ARTIFACT's build folder no longer matches the sha256 in its manifest.json.")
def command(artifact, target, device, batches, input_shape, iterations, min_seconds, max_seconds, warmup, warmup_cv,
            warmup_window, warmup_max, threads, mode, streams, nireq, clients, client_seconds, background_load,
            e2e_input, e2e_size, e2e_task, json_path, no_verify) -> None:
    """Measure latency percentiles (min to p99.9, CV) and throughput of ARTIFACT on real images, after a warm-up
    until latency is stable. An artifact in a build folder is first checked against the sha256 its manifest
    recorded."""
    from medexport._io import write_json
    from medexport.bench.latency import WarmupRule
    from medexport.bench.run import bench_artifact
    from medexport.errors import InputError, ModelLoadError
    from medexport.loading import parse_shape
    from medexport.pipeline._outdir import check_out
    from medexport.pipeline.manifest import verify_folder

    sizes = _batch_sizes(batches)
    client_counts = _int_list(clients, "--clients") if clients else None
    if input_shape:
        parse_shape(input_shape)   # a malformed shape is an error before the artifact is opened
    e2e = parse_shape(e2e_size) if e2e_size else None
    if warmup_max < 2 * warmup_window:
        raise InputError(f"--warmup-max {warmup_max} must be at least twice --warmup-window {warmup_window}")
    rule = warmup if warmup is not None else WarmupRule(window=warmup_window, cv=warmup_cv, max_calls=warmup_max)
    if not Path(artifact).is_file():
        raise ModelLoadError(f"artifact not found: {artifact}")
    json_path = Path(json_path) if json_path else Path(artifact).with_name(Path(artifact).name + ".bench.json")
    if json_path.is_dir():
        raise InputError(f"--json {json_path} is a folder: give a file name")
    check_out(json_path.parent, "--json's folder")
    if not no_verify:
        verify_folder(Path(artifact))
    result = bench_artifact(Path(artifact), target=target, device=device, batches=sizes, input_shape=input_shape,
                            iterations=iterations, warmup=rule, threads=threads, min_seconds=min_seconds,
                            max_seconds=max_seconds, mode=mode, streams=streams, nireq=nireq, clients=client_counts,
                            client_seconds=client_seconds, background_load=background_load,
                            e2e_input=Path(e2e_input) if e2e_input else None, e2e_size=e2e, e2e_task=e2e_task)
    write_json(json_path, result)
    _print(result, Path(artifact).name)
    click.echo(f"wrote {json_path}")


def _print(result: dict, name: str) -> None:
    """The tables a person reads; the JSON has everything."""
    from rich.table import Table

    out = console()
    out.file = click.get_text_stream("stdout")
    table = Table(title=f"{name} on {result['target']} ({', '.join(result['devices'])}), compute only")
    cols = ("batch", "median ms", "p90 ms", "p99 ms", "p99.9 ms", "CV", "images/s", "runs", "warm-up")
    for col in cols:
        table.add_column(col, justify="right")
    for r in result["latency"]:
        settled = {True: "", False: " (unsettled)", None: ""}[r.get("warmup_stable")]
        table.add_row(str(r["batch"]), f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
                      f"{r['p999_ms']:.2f}", f"{r['cv']:.1%}", f"{r['throughput_per_s']:.1f}", str(r["iterations"]),
                      f"{r['warmup']}{settled}")
    out.print(table)
    for t in result.get("throughput", []):
        out.print(f"async throughput, batch {t['batch']}: {t['throughput_per_s']:.1f} images/s with {t['nireq']} "
                  f"requests in flight (median {t['median_ms']:.2f} ms per request)")
    e2e = result.get("end_to_end")
    if e2e:
        stages = ", ".join(f"{k} {v['median_ms']:.1f}" for k, v in e2e["stages"].items())
        out.print(f"end to end on {e2e['source']}: median {e2e['total']['median_ms']:.1f} ms ({stages} ms)")
    for run in result.get("contention", []):
        p = run["pooled"]
        worst = max(c["p99_ms"] for c in run["clients"])
        load = f" + {run['background_load']} busy processes" if run["background_load"] else ""
        out.print(f"{run['n_clients']} client(s){load}: "
                  f"pooled median {p['median_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms (worst client p99 {worst:.2f}), "
                  f"{run['throughput_per_s']:.1f} images/s together")
    mem = result["memory"]
    out.print(f"peak host memory {mem['peak_rss_mib']:.0f} MiB (the artifact added "
              f"{(mem['rss_after_open_mib'] or 0) - (mem['rss_before_open_mib'] or 0):.0f} MiB on opening); "
              f"warm-up {result['warmup_rule']}")
    env = result["environment"]
    out.print(f"measured on {env['cpu']} ({', '.join(env['isa']) or 'no AVX2'}), {env['logical_cores']} logical cores, "
              f"affinity {env['affinity']}, load {env['load_average_1m']}")
    if result["warning"]:
        out.print(f"[yellow]warning:[/yellow] {result['warning']}")


def _batch_sizes(text: str) -> list[int]:
    return _int_list(text, "--batch")


def _int_list(text: str, option: str) -> list[int]:
    from medexport.errors import InputError

    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise InputError(f"{option} must be integers separated by commas, got '{text}'") from None
    if not sizes or min(sizes) < 1:
        raise InputError(f"{option} values must be at least 1")
    return sizes
