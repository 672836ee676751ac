"""`medexport bench`: latency of built artifacts (ONNX, OpenVINO IR or TensorRT plan) or build folders, compared
against a baseline, with results imported from devices; report.json/.md/.html on request."""
from __future__ import annotations

from pathlib import Path

import click

from medexport.cli._options import RegistryChoice, console
from medexport.runtimes import artifact_suffixes, target_choices


@click.command("bench")
@click.argument("artifacts", nargs=-1, type=click.Path())
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
              help="Where to write the latency of a single ARTIFACT (default: ARTIFACT.bench.json beside each).")
@click.option("--baseline", default=None,
              help="The result speed-ups are measured against: one of ARTIFACTS or --import (default: the first).")
@click.option("--import", "imports", multiple=True, metavar="FILE[:BATCH]",
              help="A result measured on a device that joins the comparison: an edge package's `run.py bench` "
                   "JSON, or trtexec --exportTimes JSON (which records no batch: FILE:4 for batch 4, default 1). "
                   "Repeatable.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write report.json, report.md and report.html of the comparison into this folder.")
@click.option("--layers", is_flag=True, help="Also time each node with the runtime's profiler, beside its MACs.")
@click.option("--no-verify", is_flag=True,
              help="Run even if ARTIFACT's build folder no longer matches the sha256 in its manifest.json.")
def command(artifacts, target, device, batches, input_shape, iterations, min_seconds, max_seconds, warmup, warmup_cv,
            warmup_window, warmup_max, threads, mode, streams, nireq, clients, client_seconds, background_load,
            e2e_input, e2e_size, e2e_task, json_path, baseline, imports, report_dir, layers, no_verify) -> None:
    """Measure latency percentiles (min to p99.9, CV) and throughput of each ARTIFACT (a built artifact or a build
    folder) on real images, after a warm-up until latency is stable, and compare them: speed-up against --baseline,
    MACs, size on disk, guard rails. An artifact in a build folder is first checked against the sha256 its manifest
    recorded."""
    from rich.table import Table

    from medexport._io import write_json, write_text
    from medexport.bench import environment
    from medexport.bench.compare import artifact_of, comparison, entry, facts_of, unique_names
    from medexport.bench.html import report_html
    from medexport.bench.imports import read_import
    from medexport.bench.latency import WarmupRule
    from medexport.bench.layers import measured_layers
    from medexport.bench.report import bench_markdown
    from medexport.bench.run import bench_artifact
    from medexport.bench.schema import stamped
    from medexport.errors import InputError
    from medexport.loading import parse_shape
    from medexport.pipeline._outdir import check_out
    from medexport.pipeline.manifest import verify_folder

    if not artifacts and not imports:
        raise InputError("give at least one ARTIFACT (or build folder) or --import FILE")
    sizes = _batch_sizes(batches)
    client_counts = _int_list(clients, "--clients") if clients else None
    shape = tuple(parse_shape(input_shape)) if input_shape else None   # a malformed shape fails before any work
    e2e = parse_shape(e2e_size) if e2e_size else None
    if warmup_max < 2 * warmup_window:
        raise InputError(f"--warmup-max {warmup_max} must be at least twice --warmup-window {warmup_window}")
    rule = warmup if warmup is not None else WarmupRule(window=warmup_window, cv=warmup_cv, max_calls=warmup_max)
    if json_path and len(artifacts) != 1:
        raise InputError("--json names the file of a single ARTIFACT; with several, each gets ARTIFACT.bench.json")
    resolved = [artifact_of(Path(a)) for a in artifacts]
    names = unique_names([Path(a) for a in artifacts])
    given = dict(zip(artifacts, names))
    imported = [read_import(spec) for spec in imports]
    given.update({spec: name for spec, (name, _) in zip(imports, imported)})
    baseline = given.get(baseline, baseline) if baseline else next(iter(given.values()))
    if baseline not in given.values():
        raise InputError(f"--baseline {baseline} is none of the compared results ({', '.join(given.values())})")
    json_paths = [Path(json_path) if json_path else art.with_name(art.name + ".bench.json") for art in resolved]
    for path in json_paths:
        if path.is_dir():
            raise InputError(f"--json {path} is a folder: give a file name")
        check_out(path.parent, "--json's folder")
    if report_dir:
        check_out(Path(report_dir), "--report")

    entries, printed = [], []
    for name, artifact, path in zip(names, resolved, json_paths):
        if not no_verify:
            verify_folder(artifact)
        result = bench_artifact(artifact, target=target, device=device, batches=sizes, input_shape=input_shape,
                                iterations=iterations, warmup=rule, threads=threads, min_seconds=min_seconds,
                                max_seconds=max_seconds, mode=mode, streams=streams, nireq=nireq,
                                clients=client_counts, client_seconds=client_seconds, background_load=background_load,
                                e2e_input=Path(e2e_input) if e2e_input else None, e2e_size=e2e, e2e_task=e2e_task)
        write_json(path, result)
        facts = facts_of(artifact)   # (after the runner opened it: a broken file is the runner's one-line error)
        entries.append(entry(name, f"measured here by medexport bench ({artifact.name})", result, facts))
        if layers:
            entries[-1]["layers"] = measured_layers(artifact, result["target"], input_shape=shape, threads=threads,
                                                    profile_layers=facts.get("profile_layers"))
        printed.append((artifact, result, path))
    out = console()
    out.file = click.get_text_stream("stdout")
    for artifact, result, path in printed:
        _print(out, result, artifact.name, Table)
        out.print(f"wrote {path}")
    entries += [entry(name, result["source"], result, {}) for name, result in imported]
    report = stamped({"baseline": baseline, "entries": entries, "comparison": comparison(entries, baseline),
                      "environment": environment()}, "bench")
    if len(entries) > 1:
        out.print(_comparison_table(report, Table))
    if report_dir:
        folder = Path(report_dir)
        write_json(folder / "report.json", report)
        write_text(folder / "report.md", bench_markdown(report))
        write_text(folder / "report.html", report_html(report))
        out.print(f"wrote {folder}/ (report.json, report.md, report.html)")


def _comparison_table(report: dict, table_type):
    table = table_type(title=f"median latency and speed-up against {report['baseline']}")
    for col in ("result", "batch", "ms", "speed-up", "MMACs", "ideal", "real/ideal", "MiB", "worst class", "rails"):
        table.add_column(col, justify="left" if col in ("result", "worst class") else "right")
    for r in report["comparison"]:
        worst = r["worst_class"]
        table.add_row(r["name"], str(r["batch"]), f"{r['median_ms']:.2f}", _fmt(r["speedup"], ".2f", "x"),
                      _fmt(r["macs"] and r["macs"] / 1e6, ".1f"), _fmt(r["ideal_speedup"], ".2f", "x"),
                      _fmt(r["realized_over_ideal"], ".2f"), _fmt(r["size_bytes"] and r["size_bytes"] / 2**20, ".2f"),
                      f"{worst['name']} {100 * worst['value']:.1f}%" if worst else "–",
                      {True: "held", False: "BROKEN", None: "–"}[r["guard_rails_passed"]])
    return table


def _fmt(value, spec: str, unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


def _print(out, result: dict, name: str, table_type) -> None:
    """The tables a person reads about one artifact; the JSON has everything."""
    table = table_type(title=f"{name} on {result['target']} ({', '.join(result['devices'])}), compute only")
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
