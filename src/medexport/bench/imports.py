"""Results measured elsewhere that join a comparison: the edge package's ``run.py bench`` JSON and trtexec's
``--exportTimes`` JSON.

The edge package's bench writes one object (``model``, ``runtime``, ``precision``, ``batch``, ``p50_ms``,
``p90_ms``, ``p99_ms``, ``mean_ms``, ``throughput_per_s``, ``devices``); trtexec writes a list with one record per
inference (``latencyMs``, ``computeMs``, ``endToEndMs``... in milliseconds, names as in TensorRT's
``tracer.py``/``prn_times``), which carries no batch size: give it as ``FILE:BATCH`` (default 1).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from medexport.errors import InputError

# trtexec per-inference intervals, reported apart: latency (host to host, what an application sees) first
_TRTEXEC_INTERVALS = {"latencyMs": "", "computeMs": "compute_", "endToEndMs": "end_to_end_"}


def read_import(spec: str) -> tuple[str, dict[str, Any]]:
    """(name, result) for ``--import FILE`` or ``FILE:BATCH``; the result has the keys of a measured bench result."""
    match = re.fullmatch(r"(.+):(\d+)", spec)
    path, batch = (Path(match[1]), int(match[2])) if match and not Path(spec).is_file() else (Path(spec), None)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--import {spec}: cannot read it as JSON ({type(exc).__name__})") from None
    if isinstance(data, list):
        return path.name, trtexec_times(data, batch or 1, path.name)
    if isinstance(data, dict) and "runtime" in data and "p50_ms" in data:
        if batch is not None and batch != data.get("batch"):
            raise InputError(f"--import {spec}: the file says batch {data.get('batch')}")
        return path.name, edge_bench(data, path.name)
    raise InputError(f"--import {spec}: neither an edge package's bench JSON nor trtexec --exportTimes JSON")


def edge_bench(data: dict[str, Any], filename: str) -> dict[str, Any]:
    """An edge package's bench result as a bench result (its p50 is the median)."""
    stats = {"batch": data.get("batch"), "iterations": data.get("iterations"), "median_ms": data["p50_ms"],
             **{k: v for k, v in data.items() if k.endswith("_ms") and k != "p50_ms"},
             "throughput_per_s": data.get("throughput_per_s")}
    return {"target": data["runtime"], "devices": data.get("devices", []), "precision": data.get("precision"),
            "latency": [stats], "source": f"edge package bench ({filename}, model {data.get('model')})"}


def trtexec_times(records: list[Any], batch: int, filename: str) -> dict[str, Any]:
    """Percentiles of trtexec's per-inference records; latency (``latencyMs``) is the headline, compute-only
    and end-to-end times come as ``compute_*_ms`` and ``end_to_end_*_ms``."""
    if not records or not all(isinstance(r, dict) for r in records):
        raise InputError(f"--import {filename}: trtexec times must be a non-empty list of objects")
    key = "latencyMs" if all("latencyMs" in r for r in records) else "computeMs"
    stats: dict[str, Any] = {"batch": batch, "iterations": len(records)}
    for field, prefix in _TRTEXEC_INTERVALS.items():
        if not all(isinstance(r.get(field), (int, float)) for r in records):
            continue
        ms = np.asarray([r[field] for r in records], float)
        prefix = "" if field == key else prefix
        stats.update({f"{prefix}median_ms": float(np.median(ms)), f"{prefix}mean_ms": float(ms.mean()),
                      f"{prefix}min_ms": float(ms.min()), f"{prefix}p90_ms": float(np.percentile(ms, 90)),
                      f"{prefix}p99_ms": float(np.percentile(ms, 99)), f"{prefix}max_ms": float(ms.max())})
    if "median_ms" not in stats:
        raise InputError(f"--import {filename}: trtexec records have neither latencyMs nor computeMs")
    stats["throughput_per_s"] = batch * 1e3 / stats["median_ms"]
    return {"target": "tensorrt", "devices": ["tensorrt (trtexec)"], "latency": [stats],
            "source": f"trtexec --exportTimes ({filename}, batch {batch} as given)"}
