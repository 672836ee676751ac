"""ONNX Runtime helpers: provider names and the node-to-provider placement actually used."""
from __future__ import annotations

import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np

_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
            "tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider",
            "coreml": "CoreMLExecutionProvider", "dml": "DmlExecutionProvider"}


def provider_names(device: str | None) -> list[str]:
    """The providers to ask for to run on ``device`` (a short name, 'cuda', or a provider name; None: CPU), CPU
    always the last fallback: ``provider_names("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]``."""
    names = [_ALIASES.get((device or "cpu").lower(), device)]
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names


def node_placement(onnx_path: Path, providers: list[str], sample: np.ndarray, input_name: str) -> dict[str, int]:
    """Run once with profiling on and count kernels per execution provider that really executed them.

    ``session.get_providers()`` only lists providers that registered; the profile shows where each node ran,
    which is how a silent CPU fallback of some nodes becomes visible.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort_profile")
        session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        session.run(None, {input_name: sample})
        profile_path = session.end_profiling()
        events = json.loads(Path(profile_path).read_text())
    counts: collections.Counter[str] = collections.Counter()
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args and event.get("name", "").endswith("_kernel_time"):
            counts[args["provider"]] += 1
    return dict(counts)
