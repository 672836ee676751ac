"""`medexport trt-check`: will TensorRT's ONNX parser take this ONNX? Checked here, without TensorRT."""
from __future__ import annotations

import json

import click

from medexport.runtimes.tensorrt.readiness import VERSIONS


@click.command("trt-check")
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("--trt-version", "versions", multiple=True, default=VERSIONS, show_default=True,
              help="TensorRT version(s) to check against: 10.3 (JetPack 6.1/6.2), 10.13 (JetPack 7.0/7.1), 10.16 "
                   "(JetPack 7.2), 11 (x86, JetPack 7.2.2); repeat for several.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def command(onnx_file, versions, as_json) -> None:
    """Check ONNX_FILE against the TensorRT ONNX parser: operators, data types, attributes, opset and the INT8 QDQ
    rules (onnx-tensorrt's operator support documentation). Exits 1 when a version would reject it."""
    from pathlib import Path

    from medexport.errors import InputError
    from medexport.runtimes.tensorrt.readiness import check_versions

    if not Path(onnx_file).is_file():
        raise InputError(f"ONNX file not found: {onnx_file}")
    reports = check_versions(onnx_file, versions)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=1))
    else:
        for report in reports:
            click.echo(f"TensorRT {report.version}: {'passes' if report.passed else 'FAILS'} "
                       f"({report.nodes} nodes, {len(report.findings)} findings)")
            for finding in report.findings:
                click.echo(f"  [{finding.rule}] {finding.message}")
    if not all(r.passed for r in reports):
        raise click.exceptions.Exit(1)
