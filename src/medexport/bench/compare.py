"""Side-by-side comparison of artifacts of one model: speed-up against a baseline, MACs, size, guard rails.

An entry is one artifact's numbers (measured here by `medexport bench`, or imported from a device, see
:mod:`medexport.bench.imports`) plus what its build folder recorded: MACs before and after compression, the size of
the built files and the guard-rail rows of its manifest. Speed-ups compare medians at the same batch size; the
ideal speed-up of a compressed model is the baseline's MACs over its MACs, so realized/ideal says how much of the
MACs saved turned into time saved on this runtime.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medexport.errors import InputError, ModelLoadError

MANIFEST, REPORT = "manifest.json", "report.json"


def artifact_of(path: Path) -> Path:
    """The artifact to run for ``path``: the artifact itself, or the one a build folder's manifest names."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise InputError(f"{path} is a folder without {MANIFEST}: give an artifact or a medexport build folder")
        try:
            return path / json.loads((path / MANIFEST).read_text())["artifact"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{path / MANIFEST} is not a readable medexport manifest") from None
    if not path.is_file():
        raise ModelLoadError(f"artifact not found: {path}")
    return path


def facts_of(artifact: Path) -> dict[str, Any]:
    """What the build folder of ``artifact`` recorded about it (:func:`build_facts`); only its size on disk when it
    is not in a build folder or the folder's records cannot be read."""
    try:
        return build_facts(artifact.parent, artifact.name)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return {"size_bytes": _artifact_bytes(artifact)}


def build_facts(folder: Path, name: str) -> dict[str, Any]:
    """MACs, MACs before compression, size of the built files, guard rails and per-layer MACs of the file ``name``
    from its build folder's manifest.json and report.json. The guard rails and built files are those of the
    build's artifact: another file of the folder (the FP32 ONNX beside an INT8 one) gets its MACs and own size."""
    manifest = json.loads((folder / MANIFEST).read_text())
    report = json.loads((folder / REPORT).read_text())
    files = manifest["files"]
    built = report.get("build", {}).get("files") or [manifest["artifact"]]
    compression = report.get("compression") or {}
    profile = report.get("profile") or {}
    metrics = manifest.get("metrics") or {}
    if name != manifest["artifact"]:
        built, metrics = [name], {}
    return {"size_bytes": sum(files[f]["bytes"] for f in built),
            "macs": profile.get("macs", compression.get("macs_after")),
            "macs_original": compression.get("macs_before", profile.get("macs")),
            "guard_rails": metrics.get("guard_rails"),
            "profile_layers": profile.get("layers")}


def worst_class(guard_rails: dict[str, Any] | None, column: str = "candidate") -> dict[str, Any] | None:
    """The class with the lowest metric among guard-rail rows (the overall row when there are no class rows);
    ``column``: "candidate" (the artifact) or "reference" (the original model)."""
    if not guard_rails or not guard_rails.get("rows"):
        return None
    rows = [r for r in guard_rails["rows"] if r["scope"] == "class"] or guard_rails["rows"]
    row = min(rows, key=lambda r: r[column])
    return {"name": row["name"], "metric": row["metric"], "value": row[column],
            "delta_points": row["delta_points"] if column == "candidate" else 0.0}


def entry(name: str, source: str, result: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """One row set of the comparison: ``result`` from :func:`medexport.bench.run.bench_artifact` or an import."""
    return {"name": name, "source": source, "target": result["target"], "devices": result.get("devices", []),
            "latency": result["latency"], "size_bytes": facts.get("size_bytes"), "macs": facts.get("macs"),
            "macs_original": facts.get("macs_original"), "guard_rails": facts.get("guard_rails"),
            "worst_class": worst_class(facts.get("guard_rails")),
            **{k: result[k] for k in ("environment", "warning", "threads", "precision") if k in result}}


def comparison(entries: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """One row per entry and batch size: median, speed-up over ``baseline`` at that batch, MACs and the ideal
    speed-up they promise, size, the overall metric and the worst class, and whether the guard rails held."""
    base = next((e for e in entries if e["name"] == baseline), None)
    if base is None:
        names = ", ".join(e["name"] for e in entries)
        raise InputError(f"--baseline {baseline} is none of the compared results ({names})")
    base_ms = {r["batch"]: r["median_ms"] for r in base["latency"]}
    rows = []
    for e in entries:
        for r in e["latency"]:
            speedup = base_ms[r["batch"]] / r["median_ms"] if r["batch"] in base_ms and r["median_ms"] > 0 else None
            ideal = base["macs"] / e["macs"] if base.get("macs") and e.get("macs") else None
            rows.append({"name": e["name"], "batch": r["batch"], "median_ms": r["median_ms"],
                         "speedup": _round(speedup), "ideal_speedup": _round(ideal),
                         "realized_over_ideal": _round(speedup / ideal if speedup and ideal and ideal != 1 else None),
                         "macs": e.get("macs"), "size_bytes": e.get("size_bytes"), "worst_class": e.get("worst_class"),
                         "overall": _overall(e.get("guard_rails")),
                         "guard_rails_passed": (e.get("guard_rails") or {}).get("passed")})
    return rows


def _overall(guard_rails: dict[str, Any] | None) -> dict[str, Any] | None:
    row = next((r for r in (guard_rails or {}).get("rows", []) if r["scope"] == "overall"), None)
    return row and {"metric": row["metric"], "value": row["candidate"], "delta_points": row["delta_points"]}


def unique_names(paths: list[Path]) -> list[str]:
    """Short names for compared paths: the file or folder name, with its parent where two would clash."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _artifact_bytes(artifact: Path) -> int:
    """Bytes of an artifact with the files it loads beside it (an OpenVINO IR's .bin, an ONNX's external data)."""
    size = artifact.stat().st_size
    if artifact.suffix == ".xml" and artifact.with_suffix(".bin").is_file():
        size += artifact.with_suffix(".bin").stat().st_size
    if artifact.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(artifact), load_external_data=False)
        names = {d.value for t in proto.graph.initializer for d in t.external_data if d.key == "location"}
        size += sum((artifact.parent / n).stat().st_size for n in names if (artifact.parent / n).is_file())
    return size
