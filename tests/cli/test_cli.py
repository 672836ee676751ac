"""The CLI end to end: help for every verb, the default build, and one-line errors that lose nothing."""
import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from medexport.cli import cli, main

VERBS = sorted(cli.commands)  # every verb the CLI registers, so a new one is tested without editing this file


def run(args, tmp_path):
    """Run the real console entry point in a subprocess: exit code, stdout, stderr."""
    proc = subprocess.run([sys.executable, "-c", "from medexport.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=tmp_path)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("verb", [None, *VERBS])
def test_help(verb):
    result = CliRunner().invoke(cli, [verb, "--help"] if verb else ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    # progress lines ("✓ load") may come first; the error itself is one line, the last, with no traceback
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    assert lines[-1].startswith("medexport: error:") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_tensorrt_missing_is_one_line(tmp_path):
    pytest.importorskip("click")
    if __import__("importlib").util.find_spec("tensorrt"):
        pytest.skip("tensorrt is installed here")
    code, _, err = run(["build", "--target", "tensorrt", "--out", "o"], tmp_path)
    assert_one_line_error(code, err, "medexport[tensorrt]")
    assert not (tmp_path / "o").exists()  # failed before any work: nothing written


@pytest.mark.parametrize("case", ["missing-weights", "corrupt-checkpoint", "pickled-checkpoint", "bad-onnx",
                                  "wrong-shape", "unknown-target", "bad-factory", "onnx-shape-mismatch",
                                  "finetune-without-compression"])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path):
    factory = ["--model", "monai.networks.nets:UNet", "--model-kwargs",
               json.dumps({"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
                           "strides": [2]})]
    if case == "missing-weights":
        args, expect = [*factory, "--weights", "nope.pt", "--input-shape", "1x1x32x32"], "checkpoint not found"
    elif case == "corrupt-checkpoint":
        (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 truncated zip")
        args, expect = [*factory, "--weights", "bad.pt", "--input-shape", "1x1x32x32"], "not a readable PyTorch checkpoint"
    elif case == "pickled-checkpoint":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Opaque()}, tmp_path / "pickled.pt")
        args, expect = [*factory, "--weights", "pickled.pt", "--input-shape", "1x1x32x32"], "--trust-pickle"
    elif case == "bad-onnx":
        (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
        args, expect = ["--model", "bad.onnx"], "not a valid ONNX model"
    elif case == "wrong-shape":
        args, expect = [*factory, "--input-shape", "1x3x32x32"], "does not run on an input of shape 1x3x32x32"
    elif case == "unknown-target":
        args, expect = ["--target", "tflite"], "'tflite' is not one of onnxruntime, ort, openvino, ov, tensorrt, trt"
    elif case == "finetune-without-compression":
        args, expect = ["--finetune", "50"], "--finetune recovers a compressed model"
    elif case == "bad-factory":
        args, expect = ["--model", "no_such_module:make", "--input-shape", "1x1x32x32"], "cannot import model factory"
    else:
        (tmp_path / "m.onnx").write_bytes(_tiny_onnx())
        args, expect = ["--model", "m.onnx", "--input-shape", "1x1x16x16"], "does not match"
    code, _, err = run(["build", "--out", "o", "--no-latency", *args], tmp_path)
    assert_one_line_error(code, err, expect)
    written = sorted(p.name for p in (tmp_path / "o").glob("*")) if (tmp_path / "o").exists() else []
    assert "manifest.json" not in written and not [n for n in written if n.endswith(".part")]
    assert "model.onnx" not in written


class _Opaque:
    """A pickled Python object: weights_only loading must refuse it."""


def _tiny_onnx() -> bytes:
    import io

    model = torch.nn.Conv2d(1, 2, 3)
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), buf, input_names=["input"], dynamo=False)
    return buf.getvalue()


def test_main_returns_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build", "--target", "nope"])
    assert exc.value.code == 2   # a usage error (an unknown choice); a MedexportError exits 1
    assert capsys.readouterr().err.strip().count("\n") == 0
    with pytest.raises(SystemExit) as exc:
        main(["build", "--finetune", "5"])
    assert exc.value.code == 1
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_inspect_prints_and_writes_json(tmp_path):
    code, out, err = run(["inspect", "--json", "p.json"], tmp_path)
    assert code == 0, err
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["model"] == "brain-tissue-unet2d"
    assert data["totals"]["macs"] > 1e7 and data["totals"]["params"] > 1e4
    assert "GMACs" in out
