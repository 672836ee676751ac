"""`medexport build` with no arguments: the trained 2D model, per-class validation, a complete manifest."""
import importlib.util
import json

import pytest

from medexport._io import sha256
from medexport.loading import ModelSpec
from medexport.pipeline import BuildConfig, DataConfig, LatencyConfig, run_build
from tests._chromium import PLOTS, blank_fraction, needs_chromium, open_page


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    run_build(BuildConfig(model=ModelSpec(), out_dir=out, latency=LatencyConfig(iterations=5)))
    return out


def test_default_build_validates_per_class_against_torch(default_build):
    report = json.loads((default_build / "report.json").read_text())
    assert report["model"] == "brain-tissue-unet2d" and report["target"] == "onnxruntime"
    assert report["backend_parity"]["max_abs_error"] < 1e-4
    rails = report["validation"]["guard_rails"]
    assert rails["passed"]
    classes = {row["name"] for row in rails["rows"] if row["scope"] == "class"}
    assert classes == {"grey_matter", "white_matter"}
    per_class = report["validation"]["artifact"]["per_class"]
    assert per_class["grey_matter"]["dice"]["value"] > 0.8
    assert "| class | grey_matter |" in (default_build / "report.md").read_text()
    assert report["latency"]["onnxruntime"]["median_ms"] > 0


def test_manifest_hashes_every_file(default_build):
    manifest = json.loads((default_build / "manifest.json").read_text())
    on_disk = {p.name for p in default_build.iterdir() if p.name != "manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(default_build / name)
    assert manifest["input"]["shape"] == [1, 1, 128, 128]
    assert manifest["outputs"][0]["shape"] == ["batch", 3, 128, 128]


def test_validate_fails_on_a_damaged_model_and_names_the_class(tmp_path):
    """Zero the white-matter output channel of the last up-sampling layer: `validate` must fail on it."""
    import subprocess
    import sys

    import torch

    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    state = torch.load(ref.weights_path(), weights_only=True)
    state["model.2.conv.weight"][:, 2].zero_()  # the head ConvTranspose (in, out, k, k): output channel 2 = white matter
    torch.save(state, tmp_path / "damaged.pt")

    def medexport(*args):
        return subprocess.run([sys.executable, "-c", "from medexport.cli import main; main()", *args],
                              capture_output=True, text=True, cwd=tmp_path)

    export = medexport("export", "--model", ref.factory, "--weights", "damaged.pt", "--input-shape", "1x1x128x128",
                       "--out", "damaged")
    assert export.returncode == 0, export.stderr
    proc = medexport("validate", "damaged/model.onnx")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("medexport: error: guard rail broken") and "white_matter" in last
    table = json.loads((tmp_path / "damaged" / "validation.json").read_text())
    rows = {row["name"]: row for row in table["guard_rails"]["rows"]}
    assert not rows["white_matter"]["ok"] and rows["white_matter"]["delta_points"] < -3
    assert "white_matter" in (tmp_path / "damaged" / "validation.md").read_text()


def test_manifest_vouches_only_for_what_the_build_wrote(tmp_path):
    (tmp_path / "stale_notes.txt").write_text("left over from something else")
    run_build(BuildConfig(model=ModelSpec(input_shape=None, dynamic_batch=False), out_dir=tmp_path, latency=LatencyConfig(enabled=False)))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "stale_notes.txt" not in manifest["files"]
    assert manifest["input"]["dynamic_batch"] is False  # static batch works through validation too
    assert manifest["metrics"]["guard_rails"]["passed"]


def test_user_model_with_user_data_runs_the_guard_rails(tmp_path):
    import numpy as np

    from medexport.zoo import get_model

    ref = get_model("brain-tissue-unet2d")
    images, labels = ref.heldout()
    np.savez(tmp_path / "heldout.npz", images=images[:8], labels=labels[:8])
    user_model = ModelSpec(model=ref.factory, weights=str(ref.weights_path()), input_shape="1x1x128x128")
    report = run_build(BuildConfig(model=user_model, out_dir=tmp_path / "with", data=DataConfig(data=str(tmp_path / "heldout.npz"), task="segmentation", classes=("background", "grey_matter", "white_matter")), latency=LatencyConfig(enabled=False))).to_dict()
    assert report["validation"]["guard_rails"]["passed"]
    assert "heldout.npz" not in json.dumps(report["validation"]["data"])  # a count and a hash, not a path
    user_model = ModelSpec(model=ref.factory, weights=str(ref.weights_path()), input_shape="1x1x128x128")
    report = run_build(BuildConfig(model=user_model, out_dir=tmp_path / "without", latency=LatencyConfig(enabled=False))).to_dict()
    assert report["validation"]["skipped"].startswith("guard rails not run: no labelled data")


def test_weights_do_not_apply_to_the_reference_model(tmp_path):
    from medexport.errors import InputError

    with pytest.raises(InputError, match="not to the bundled reference model"):
        run_build(BuildConfig(model=ModelSpec(weights="x.pt"), out_dir=tmp_path, latency=LatencyConfig(enabled=False)))
    assert not (tmp_path / "manifest.json").exists()


def test_build_report_follows_the_schema_with_every_documented_key(default_build):
    pytest.importorskip("jsonschema")
    from medexport.bench.schema import report_schema, validate_report
    from medexport.errors import InputError

    report = json.loads((default_build / "report.json").read_text())
    assert report["schema_version"] == 1 and report["kind"] == "build"
    validate_report(report)
    for key in report_schema()["required"] + report_schema()["$defs"]["build"]["required"]:
        with pytest.raises(InputError, match=key):
            validate_report({k: v for k, v in report.items() if k != key})
    layers = report["profile"]["layers"]   # per-layer MACs for report.html, summing to the model's
    assert len(layers) >= 5 and sum(layer["macs"] for layer in layers) == report["profile"]["macs"]


@needs_chromium
def test_build_report_html_renders_with_its_plots(default_build):
    pytest.importorskip("matplotlib")
    page = open_page(default_build / "report.html", PLOTS)
    assert page.errors == [] and page.requests == [(default_build / "report.html").resolve().as_uri()]
    plots = json.loads(page.values)
    assert {"plot-latency", "plot-pareto"} <= set(plots) and any(name.startswith("plot-layers") for name in plots)
    assert all(paths >= 5 and width > 300 for paths, width in plots.values()), plots
    assert blank_fraction(page.screenshot) < 0.97
    html = (default_build / "report.html").read_text()
    assert "white_matter" in html and "grey_matter" in html   # the guard-rail table


def test_bench_compares_a_build_folder_with_results_from_devices(default_build, tmp_path):
    from click.testing import CliRunner

    from medexport.cli import cli

    edge = {"model": "brain-tissue-unet2d", "runtime": "openvino", "precision": "int8", "batch": 1, "iterations": 20,
            "mean_ms": 2.1, "p50_ms": 2.0, "p90_ms": 2.5, "p99_ms": 3.0, "throughput_per_s": 476.0, "devices": ["CPU"]}
    (tmp_path / "edge.json").write_text(json.dumps(edge))
    (tmp_path / "times.json").write_text(json.dumps([{"latencyMs": 1.0 + i / 10, "computeMs": 0.8} for i in range(11)]))
    args = ["bench", str(default_build), "--import", str(tmp_path / "edge.json"), "--import",
            f"{tmp_path / 'times.json'}:1", "--iterations", "5", "--warmup", "1", "--json", str(tmp_path / "b.json")]
    result = CliRunner().invoke(cli, [*args, "--baseline", str(default_build), "--report", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    rows = {row["name"]: row for row in report["comparison"]}
    base, build = rows[default_build.name], json.loads((default_build / "report.json").read_text())
    files = json.loads((default_build / "manifest.json").read_text())["files"]
    assert base["speedup"] == 1.0 and base["macs"] == build["profile"]["macs"] and base["guard_rails_passed"]
    assert base["size_bytes"] == sum(files[name]["bytes"] for name in build["build"]["files"])
    assert base["worst_class"]["name"] in ("grey_matter", "white_matter")
    assert rows["edge.json"]["speedup"] == pytest.approx(base["median_ms"] / 2.0, rel=1e-2)
    assert rows["times.json"]["median_ms"] == pytest.approx(1.5)
    assert "edge.json" in (tmp_path / "cmp" / "report.md").read_text() and (tmp_path / "cmp" / "report.html").is_file()
    if importlib.util.find_spec("jsonschema"):
        from medexport.bench.schema import validate_report

        validate_report(report)
    wrong = CliRunner().invoke(cli, [*args, "--baseline", "int8"])
    assert wrong.exit_code == 1 and wrong.output.strip().splitlines()[-1].startswith(
        "medexport: error: --baseline int8 is none of the compared results"), wrong.output


def test_bench_layers_puts_measured_time_beside_macs(default_build, tmp_path):
    """`--layers` times each node with ONNX Runtime's profiler (medexport.bench.node_times) beside its MACs."""
    from click.testing import CliRunner

    from medexport.cli import cli

    result = CliRunner().invoke(cli, ["bench", str(default_build), "--layers", "--threads", "1", "--iterations", "3",
                                      "--warmup", "0", "--json", str(tmp_path / "b.json"), "--report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    layers = json.loads((tmp_path / "report.json").read_text())["entries"][0]["layers"]
    profiled = json.loads((default_build / "report.json").read_text())["profile"]
    convs = [row for row in layers if row["op_type"] in ("Conv", "ConvTranspose")]
    assert convs and sum(row["macs"] for row in convs) == profiled["macs"]   # every layer's MACs found its node
    assert all(row["ms"] > 0 for row in convs)
    assert "% of measured time" in (tmp_path / "report.html").read_text()
