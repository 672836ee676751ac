"""Malformed input to every verb is one line and a non-zero exit, never a traceback, and leaves no folder behind.

Hypothesis is not installed here: a seeded generator makes a bounded set of malformed shapes, JSON files, truncated
and random-byte models and images, so a failure reproduces exactly.
"""
import json
import random

import torch
from click.testing import CliRunner

from medexport.cli import cli

SEED = 14
MODEL = ["--model", "monai.networks.nets:UNet", "--model-kwargs",
         json.dumps({"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]})]
WRITERS = [["export"], ["quantize"], ["compress", "--method", "svd"], ["build", "--no-latency"]]


def malformed_shapes(rng: random.Random, n: int) -> list[str]:
    """Shapes no verb can use: unparsable text, a wrong rank, a zero or negative size, or a channel count the
    one-channel model cannot take (sizes kept small, so no case allocates much)."""
    dims = lambda k: [str(rng.randint(1, 40)) for _ in range(k)]  # noqa: E731
    makers = [
        lambda: "".join(rng.choice("x,0123456789 -.abé") for _ in range(rng.randint(0, 12))) + rng.choice("a-.é "),
        lambda: "x".join(dims(rng.choice([1, 2, 3, 6, 7]))),
        lambda: "x".join(["1", "1", *dims(2)[:1], rng.choice(["0", "-3"])]),
        lambda: "x".join(["1", str(rng.randint(2, 9)), *dims(rng.choice([2, 3]))]),
    ]
    return [makers[i % len(makers)]() for i in range(n)]


def bad_files(rng: random.Random, tmp_path) -> dict[str, object]:
    """Truncated and random-byte models, images and JSON, each under the name a verb expects."""
    import io

    buf = io.BytesIO()
    torch.onnx.export(torch.nn.Conv2d(1, 2, 3), (torch.zeros(1, 1, 8, 8),), buf, input_names=["input"], dynamo=False)
    onnx_bytes = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    pt_bytes = buf.getvalue()
    noise = lambda n: bytes(rng.getrandbits(8) for _ in range(n))  # noqa: E731
    contents = {
        "truncated.onnx": onnx_bytes[: len(onnx_bytes) // 2], "random.onnx": noise(300), "empty.onnx": b"",
        "truncated.pt": pt_bytes[: len(pt_bytes) // 2], "random.pt": noise(300),
        "random.png": b"\x89PNG\r\n\x1a\n" + noise(200), "random.nii": noise(400), "random.dcm": noise(300),
        "random.npy": b"\x93NUMPY" + noise(100), "random.npz": b"PK\x03\x04" + noise(100),
        "broken.json": '{"config": {', "list.json": "[1, 2, 3]", "wrong.json": json.dumps({"medexport_manifest": 1}),
        "badconfig.json": json.dumps({"medexport_manifest": 1, "config": {"latency": {"seconds": "soon"}}}),
        "spec.yaml": "model: [unclosed", "random.pt2": noise(200), "random.zip": b"PK\x03\x04" + noise(200),
        "random.tar.gz": b"\x1f\x8b" + noise(200),
    }
    paths = {}
    for name, data in contents.items():
        path = tmp_path / name
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
        paths[name] = path.name
    (tmp_path / "calib").mkdir()
    for name in ("random.png", "random.nii", "random.dcm", "random.npy"):
        (tmp_path / "calib" / name).write_bytes((tmp_path / name).read_bytes())
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "model.onnx").write_bytes(onnx_bytes)
    (tmp_path / "folder" / "manifest.json").write_text(json.dumps({"files": {"../model.onnx": {"sha256": "0"}}}))
    return paths


def cases(tmp_path) -> list[list[str]]:
    rng = random.Random(SEED)
    files = bad_files(rng, tmp_path)
    out = ["--out", "o"]
    found = [[*verb, *MODEL, "--input-shape", shape, *out]
             for shape, verb in zip(malformed_shapes(rng, 16), WRITERS * 4)]
    found += [["validate", files["random.onnx"], "--input-shape", shape] for shape in malformed_shapes(rng, 4)]
    found += [["bench", files["truncated.onnx"], "--input-shape", shape] for shape in malformed_shapes(rng, 4)]
    for model in ("truncated.onnx", "random.onnx", "empty.onnx", "random.pt", "random.pt2"):
        found += [[*verb, "--model", files[model], *out] for verb in WRITERS]
    for weights in ("truncated.pt", "random.pt"):
        found.append(["export", *MODEL, "--input-shape", "1x1x32x32", "--weights", files[weights], *out])
    for artifact in ("truncated.onnx", "random.onnx", "empty.onnx"):
        found += [["validate", files[artifact]], ["bench", files[artifact]]]
    found += [["validate", "folder/model.onnx"], ["bench", "folder/model.onnx"]]
    for recipe in ("broken.json", "list.json", "wrong.json", "badconfig.json", "random.npz"):
        found.append(["build", "--recipe", files[recipe], *out])
    found += [["export", "--spec", files["spec.yaml"], *out], ["export", "--spec", files["broken.json"], *out],
              ["export", *MODEL[:2], "--model-kwargs", "{'spatial_dims': 2", "--input-shape", "1x1x32x32", *out]]
    found += [["quantize", "--calib", "calib", *out], ["quantize", "--calib", files["random.png"], *out],
              ["build", "--no-latency", "--data", files["random.npz"], *out],
              ["validate", "folder/model.onnx", "--no-verify", "--data", files["random.npz"]],
              ["build", "--latency-seconds", "0", *out], ["build", "--latency-seconds", "nan", *out],
              ["build", "--model", files["random.zip"], "--no-latency", *out]]
    found += [["package", "folder", "--target", target, *out] for target in ("ort", "jetson")]
    found += [["package", files["random.onnx"], "--target", "openvino-cpu", *out],
              ["verify", "folder"], ["verify", files["random.tar.gz"]], ["verify", files["random.onnx"]]]
    found += [["trt-check", files[model]] for model in ("truncated.onnx", "random.onnx", "empty.onnx")]
    found.append(["trt-check", "folder/model.onnx", "--trt-version", "x.y"])
    return found


def test_malformed_input_to_every_verb_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    all_cases = cases(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert {case[0] for case in all_cases} == set(cli.commands) - {"inspect"}
    for args in all_cases:
        result = CliRunner().invoke(cli, args)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), (args, result.output)
        assert lines and lines[-1].startswith("medexport: error:"), (args, result.output)
        assert all(ln.lstrip().startswith("✓") for ln in lines[:-1]), (args, result.output)   # progress lines only
        assert "Traceback" not in result.output, (args, result.output)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, args
        assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["manifest.json", "model.onnx"], args
