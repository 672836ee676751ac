"""Backends are lazy and a missing one names the extra to install."""
import importlib.util
import subprocess
import sys

import pytest

from medexport.errors import BackendUnavailableError, InputError
from medexport.runtimes import get_backend, list_backends


def test_import_medexport_loads_no_backend_or_torch():
    code = ("import sys, medexport, medexport.runtimes, medexport.cli; "
            "print(sorted(m for m in ('torch','openvino','tensorrt','onnxruntime','monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_missing_tensorrt_names_the_extra():
    with pytest.raises(BackendUnavailableError, match=r"medexport\[tensorrt\]"):
        get_backend("tensorrt")


def test_unknown_backend():
    with pytest.raises(InputError, match="unknown target 'tflite'"):
        get_backend("tflite")


def test_every_backend_has_the_same_files():
    from pathlib import Path

    import medexport.runtimes as rt

    root = Path(rt.__file__).parent
    for name in list_backends():
        files = {p.name for p in (root / name).glob("*.py")}
        assert {"__init__.py", "runner.py"} <= files, name
        if name != "torch":  # torch is a runner only: there is nothing to build
            assert {"builder.py", "util.py"} <= files, name
