"""report.json, report.md, report.html and manifest.json of a build, and the check that a build folder still matches it.

The manifest lists exactly the files the build wrote, with sha256: anything else in the folder is
not vouched for. It is written last, so a folder with a manifest is a complete, verified build.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from medexport import __version__
from medexport._io import sha256, write_json, write_text
from medexport.errors import InputError
from medexport.loading import LoadedModel
from medexport.pipeline.config import BuildConfig

if TYPE_CHECKING:
    from medexport.pipeline.build import BuildReport

MANIFEST = "manifest.json"
BUILD_RECORD = (MANIFEST, "report.json", "report.md", "report.html")   # what describes a build; the manifest goes first


def write_reports(out: Path, report: BuildReport) -> list[Path]:
    """report.json (stamped with its schema version, see medexport.bench.schema), report.md and report.html."""
    from medexport.bench.html import report_html
    from medexport.bench.report import build_markdown
    from medexport.bench.schema import stamped

    data = stamped(report.to_dict(), "build")
    return [write_json(out / "report.json", data), write_text(out / "report.md", build_markdown(data)),
            write_text(out / "report.html", report_html(data))]


def write_manifest(out: Path, config: BuildConfig, loaded: LoadedModel, report: BuildReport,
                    written: list[Path]) -> None:
    """The manifest lists exactly the files this build wrote; anything else in the folder is not vouched for."""
    files = sorted(set(written))
    data = report.to_dict()
    manifest = {
        "medexport_manifest": 1,
        "medexport_version": __version__,  # a recipe's pass defaults are this version's
        "model": loaded.name,
        "provenance": loaded.provenance,
        "input": data["input"],
        "outputs": data["export"].get("outputs"),
        "preprocessing": _preprocessing(loaded),
        "compression": data.get("compression"),
        "finetune": data.get("finetune"),  # recovery fine-tuning: recipe, images (count, hashes), loss
        "calibration": _calibration_summary(data.get("calibration")),
        "target": config.target,
        "artifact": data["build"]["artifact"],
        "config": config.to_dict(),
        "data_digests": data.get("data_digests"),  # sha256 of the images read, checked by `build --recipe`
        "parity": {"onnx": data.get("onnx_parity"), config.target: data.get("backend_parity")},
        "metrics": _metrics_summary(data.get("validation")),
        "latency": data.get("latency"),
        "environment": data.get("environment"),
        "files": {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files},
    }
    write_json(out / MANIFEST, manifest)


def _preprocessing(loaded: LoadedModel) -> dict | None:
    """What the deployed model expects of its input; known for reference models, the user's to state otherwise."""
    ref = loaded.reference
    if ref is None:
        return None
    return {"spacing_mm": list(ref.spacing) if ref.spacing else None, "intensity_range": [0.0, 1.0],
            "sliding_window_roi": list(ref.roi_size) if ref.roi_size else None, "model_card": ref.card}


def _calibration_summary(recipe: dict | None) -> dict | None:
    """The calibration recipe for the manifest: method, image count and hash, data manifest, float layers."""
    if recipe is None:
        return None
    keep = ("quantization", "float_layers", "calibration_data")
    return {k: recipe[k] for k in keep if k in recipe}


def _metrics_summary(validation: dict | None) -> dict | None:
    if not validation or "skipped" in validation:
        return validation
    return {"reference": validation["reference"]["overall"], "artifact": validation["artifact"]["overall"],
            "guard_rails": {k: validation["guard_rails"][k] for k in ("passed", "rows")}}


def listed_files(folder: Path) -> set[str]:
    """The names the manifest in ``folder`` lists (none when it has no readable manifest)."""
    try:
        return set(_hashes(folder / MANIFEST))
    except (OSError, InputError):
        return set()


def verify_folder(artifact: Path) -> None:
    """Raise a one-line InputError if ``artifact`` sits in a build folder (one with a manifest) whose files no
    longer match the manifest's sha256, or is not one of them; a folder without a manifest is not checked."""
    path = artifact.parent / MANIFEST
    if not path.is_file():
        return
    override = "rebuild it, or pass --no-verify to use it anyway"
    hashes = _hashes(path)
    if artifact.name not in hashes:
        raise InputError(f"{artifact.name} is not one of the files the manifest of its build folder {artifact.parent} "
                         f"vouches for: {override}")
    changed = mismatches(artifact.parent, hashes)
    if changed:
        raise InputError(f"the build folder {artifact.parent} no longer matches its manifest ({', '.join(changed)} "
                         f"changed or missing since the build): {override}")


def verify_whole(folder: Path, allowed_extra: Callable[[str], bool] = lambda name: False) -> int:
    """Raise a one-line InputError naming the first file of ``folder`` that was changed, deleted or added since its
    manifest was written (``allowed_extra(name)``: a file added later on purpose, e.g. a validation report);
    return how many files the manifest vouches for. Used by `medexport verify` on builds and packages alike."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(f"{folder} has no {MANIFEST}: not a medexport build or package folder")
    hashes = _hashes(path)
    for name in mismatches(Path(folder), hashes):
        what = "missing" if not (Path(folder) / name).is_file() else "changed (sha256 differs from the manifest)"
        raise InputError(f"{folder}: {name} is {what}")
    extra = sorted(p.name for p in Path(folder).iterdir()
                   if p.name != MANIFEST and p.name not in hashes and not allowed_extra(p.name))
    if extra:
        raise InputError(f"{folder}: {extra[0]} is not listed in its manifest (added after it was written)"
                         + (f", and {len(extra) - 1} more" if len(extra) > 1 else ""))
    return len(hashes)


def mismatches(folder: Path, hashes: dict[str, str]) -> list[str]:
    """The names in ``hashes`` whose file in ``folder`` is missing or no longer has that sha256."""
    return [name for name, digest in sorted(hashes.items())
            if not (folder / name).is_file() or sha256(folder / name) != digest]


def _hashes(path: Path) -> dict[str, str]:
    """File name -> sha256 from a manifest; InputError when it is not one (names with a folder part included)."""
    try:
        files = json.loads(path.read_text())["files"]
        hashes = {name: entry["sha256"] for name, entry in files.items()}
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path} is not a readable medexport manifest ({type(exc).__name__}): rebuild the folder, "
                         "or pass --no-verify") from None
    if not all(isinstance(name, str) and isinstance(digest, str) and Path(name).name == name
               and name not in ("", ".", "..")
               for name, digest in hashes.items()):
        raise InputError(f"{path} lists a file outside its folder or a malformed hash: rebuild the folder, or pass "
                         "--no-verify")
    return hashes
