"""`medexport verify`: a package or build folder (or a package tarball) still holds exactly what its manifest lists.

A changed, missing or added file fails, naming it. A build folder may also hold the reports later verbs write into
it (``validation.json``/``.md`` from `validate`, ``*.bench.json`` from `bench`); nothing else. A tarball is opened
as untrusted input (:mod:`medexport.packaging.archive`) into a scratch folder that is removed afterwards. Example::

    verify_path(Path("out/pkg.tar.gz"))    # {"kind": "package", "files": 12}
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from medexport.errors import InputError
from medexport.packaging.archive import extract_package
from medexport.pipeline.manifest import MANIFEST, verify_whole

PACKAGE_FORMAT = "medexport_package"   # the key a package's manifest carries (a build's: medexport_manifest)
_LATER_REPORTS = ("validation.json", "validation.md")


def verify_path(path: Path) -> dict:
    """Check ``path`` (package or build folder, or package .tar.gz); InputError on the first difference."""
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="medexport-verify-") as tmp:
            return {**verify_path(extract_package(path, Path(tmp))), "path": str(path)}
    if not path.is_dir():
        raise InputError(f"{path} is neither a folder nor a .tar.gz package")
    kind = _kind(path)
    allowed = (lambda name: False) if kind == "package" else _later_report
    return {"kind": kind, "files": verify_whole(path, allowed), "path": str(path)}


def _kind(folder: Path) -> str:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise InputError(f"{folder} has no readable {MANIFEST}: not a medexport build or package folder") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{folder}/{MANIFEST} is not a medexport manifest")
    return "package" if PACKAGE_FORMAT in manifest else "build"


def _later_report(name: str) -> bool:
    return name in _LATER_REPORTS or name.endswith(".bench.json")
