"""Output folders: checked before any work, never left half-written, a build folder's manifest kept true."""
import json
import os

import pytest
from click.testing import CliRunner

from medexport._io import sha256
from medexport.cli import cli
from medexport.loading import ModelSpec
from medexport.pipeline import BuildConfig, LatencyConfig, run_build

KWARGS = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]}
TINY = ModelSpec(model="monai.networks.nets:UNet", model_kwargs=KWARGS, input_shape="1x1x32x32")
TINY_ARGS = ["--model", "monai.networks.nets:UNet", "--model-kwargs", json.dumps(KWARGS), "--input-shape", "1x1x32x32"]


def build(out, **latency):
    return run_build(BuildConfig(model=TINY, out_dir=out, latency=LatencyConfig(**(latency or {"enabled": False}))))


def one_line_error(result, *fragments):
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert lines[-1].startswith("medexport: error:") and "Traceback" not in result.output, result.output
    assert [ln for ln in lines if "error" in ln] == lines[-1:], result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def matches_its_manifest(folder) -> bool:
    manifest = json.loads((folder / "manifest.json").read_text())
    return all(sha256(folder / name) == entry["sha256"] for name, entry in manifest["files"].items())


@pytest.mark.parametrize("verb", [["export"], ["quantize"], ["compress", "--method", "svd"], ["build"]])
def test_an_unwritable_out_is_one_line_before_any_work(verb, tmp_path, monkeypatch):
    """Run as root here (``id -u`` is 0), so chmod would not stop the writes: a path under a file stands for a
    folder that cannot be created, and a refusing os.access for a read-only one."""
    (tmp_path / "afile").write_text("x")
    monkeypatch.chdir(tmp_path)
    one_line_error(CliRunner().invoke(cli, [*verb, "--out", "afile/sub"]), "afile/sub cannot be created")
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and not (
        str(path).endswith("ro") and mode & os.W_OK))
    one_line_error(CliRunner().invoke(cli, [*verb, "--out", "ro"]), "--out ro is not writable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "ro"] and not any((tmp_path / "ro").iterdir())


def test_an_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    import medexport.pipeline.build as build_module

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "_latency", interrupt)   # after export, parity and the backend build
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "new" / "out", iterations=1)
    assert list(tmp_path.iterdir()) == []   # no artifact, no staging folder, not even the parent it created


def test_a_failed_rebuild_keeps_the_previous_build_whole_and_drops_a_stale_report(tmp_path, monkeypatch):
    import medexport.pipeline.build as build_module

    out = tmp_path / "out"
    build(out)
    before = {p.name: sha256(p) for p in out.iterdir()}
    monkeypatch.setattr(build_module, "_latency", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        build(out, iterations=1)
    assert {p.name: sha256(p) for p in out.iterdir()} == before and matches_its_manifest(out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    (out / "manifest.json").unlink()   # a report with no manifest describes no verified build
    with pytest.raises(RuntimeError):
        build(out, iterations=1)
    assert not (out / "report.json").exists() and not (out / "report.md").exists()
    assert (out / "model.onnx").is_file()   # not this build's to remove


def test_a_rebuild_replaces_the_previous_builds_files_and_keeps_the_users(tmp_path):
    out = tmp_path / "out"
    build(out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "model.int8.qdq.onnx").write_bytes(b"from an earlier int8 build")
    manifest["files"]["model.int8.qdq.onnx"] = {"sha256": sha256(out / "model.int8.qdq.onnx"), "bytes": 26}
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "notes.txt").write_text("mine")
    build(out)
    assert not (out / "model.int8.qdq.onnx").exists() and (out / "notes.txt").read_text() == "mine"
    assert matches_its_manifest(out)


def test_export_into_a_build_folder_invalidates_its_manifest(tmp_path, monkeypatch):
    out = tmp_path / "out"
    build(out)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["export", *TINY_ARGS, "--no-simplify", "--out", "out"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnxruntime.json"]


def test_verify_refuses_a_tampered_build_folder_in_one_line(tmp_path, monkeypatch):
    out = tmp_path / "out"
    build(out)
    monkeypatch.chdir(tmp_path)
    (out / "report.md").write_text("edited")
    for verb in (["validate"], ["bench", "--iterations", "2", "--warmup", "0"]):
        one_line_error(CliRunner().invoke(cli, [*verb, "out/model.onnx"]), "no longer matches its manifest",
                       "report.md", "--no-verify")
    result = CliRunner().invoke(cli, ["bench", "out/model.onnx", "--iterations", "2", "--warmup", "0", "--no-verify"])
    assert result.exit_code == 0, result.output
    (out / "manifest.json").write_text("{not json")
    one_line_error(CliRunner().invoke(cli, ["bench", "out/model.onnx"]), "not a readable medexport manifest")


def test_latency_seconds_caps_the_latency_stage(tmp_path):
    """Far more calls than the budget allows are asked for: the stage stops at the budget, after at least three
    timed calls per variant and round, and the report says so."""
    report = build(tmp_path / "out", iterations=10**6, seconds=1.0).to_dict()
    budget = report["latency"]["budget"]
    # uncapped, each of the 6 measurements (2 variants x 3 rounds) would run to the harness's 60 s limit
    assert budget["capped"] and budget["seconds"] == 1.0 and budget["spent_seconds"] < 8
    assert report["stage_seconds"]["latency"] < 10
    assert set(budget["timed_calls"]) == {"onnxruntime", "reference (torch)"}
    assert all(9 <= calls < 10**6 for calls in budget["timed_calls"].values())
    assert report["latency"]["onnxruntime"]["median_ms"] > 0
