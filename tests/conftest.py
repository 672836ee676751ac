"""Shared fixtures and automatic skips for hardware/backends that are not here."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    missing = {
        "openvino": importlib.util.find_spec("openvino") is None,
        "tensorrt": importlib.util.find_spec("tensorrt") is None,
        "gpu": not _cuda(),
    }
    reasons = {"openvino": "openvino is not installed (pip install 'medexport[openvino]')",
               "tensorrt": "tensorrt is not installed (needs an NVIDIA GPU; pip install 'medexport[tensorrt]')",
               "gpu": "no CUDA GPU here"}
    for item in items:
        for marker, absent in missing.items():
            if absent and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reasons[marker]))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA
