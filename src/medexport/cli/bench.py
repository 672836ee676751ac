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
@click.option("--device", default=None, help="ONNX Runtime provider or OpenVINO device.")
@click.option("--batch", "batches", default="1", show_default=True, help="Batch size(s), comma separated: 1,4,8.")
@click.option("--input-shape", default=None, help="Input shape when the artifact's is dynamic beyond the batch.")
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for the runtime (default: the runtime's choice).")
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
def command(artifacts, target, device, batches, input_shape, iterations, warmup, threads, json_path, baseline,
            imports, report_dir, layers, no_verify) -> None:
    """Measure median/p90/p99 latency and throughput of each ARTIFACT (a built artifact or a build folder) on real
    images, and compare them: speed-up against --baseline, MACs, size on disk, guard rails. An artifact in a build
    folder is first checked against the sha256 its manifest recorded."""
    from rich.table import Table

    from medexport._io import write_json, write_text
    from medexport.bench import environment
    from medexport.bench.compare import artifact_of, comparison, entry, facts_of, unique_names
    from medexport.bench.html import report_html
    from medexport.bench.imports import read_import
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
    shape = tuple(parse_shape(input_shape)) if input_shape else None   # a malformed shape fails before any work
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
                                iterations=iterations, warmup=warmup, threads=threads)
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
        out.print(_latency_table(artifact.name, result, Table))
        if result["warning"]:
            out.print(f"[yellow]warning:[/yellow] {result['warning']}")
        out.print(f"wrote {path}")
    if layers and any(e.get("layers", ()) is None for e in entries):
        out.print("[yellow]warning:[/yellow] --layers: this medexport has no per-node profiling (bench/node_times.py)")
    for e in entries:
        if e.get("layers", ()) is None:
            del e["layers"]
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


def _latency_table(name: str, result: dict, table_type):
    table = table_type(title=f"{name} on {result['target']} ({', '.join(result['devices'])})")
    for col in ("batch", "median ms", "p90 ms", "p99 ms", "images/s", "runs"):
        table.add_column(col, justify="right")
    for r in result["latency"]:
        table.add_row(str(r["batch"]), f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
                      f"{r['throughput_per_s']:.1f}", str(r["iterations"]))
    return table


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


def _batch_sizes(text: str) -> list[int]:
    from medexport.errors import InputError

    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise InputError(f"--batch must be integers separated by commas, got '{text}'") from None
    if not sizes or min(sizes) < 1:
        raise InputError("--batch sizes must be at least 1")
    return sizes
