"""Package tarballs: written atomically, and opened as untrusted input.

A package tarball holds one folder. Opening one refuses, on one line and before anything is written, an entry
outside that folder (``../``, an absolute path), a link or any other non-regular file, and sizes far beyond what the
package's own manifest lists (a decompression bomb); it then extracts with ``tarfile``'s ``data`` filter as a
second guard, only into the folder it was given. Example::

    write_tarball(Path("out/pkg"), Path("out/pkg.tar.gz"))
    root = extract_package(Path("out/pkg.tar.gz"), Path(tmp))    # tmp/pkg, checked
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path, PurePosixPath

from medexport._io import atomic_path, entry_escapes
from medexport.errors import InputError

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
SIZE_SLACK_BYTES = 1 << 20   # what the entries may add up to beyond the manifest's files (the manifest itself)


def write_tarball(folder: Path, dest: Path) -> Path:
    """``folder`` as ``dest`` (.tar.gz), its files under ``folder.name/``, sorted, without owner names."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with atomic_path(dest) as tmp, tarfile.open(tmp, "w:gz") as tar:
        tar.add(folder, arcname=folder.name, recursive=False, filter=clean)
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=f"{folder.name}/{path.name}", recursive=False, filter=clean)
    return dest


def extract_package(tarball: Path, dest: Path) -> Path:
    """Check ``tarball`` and extract it into ``dest`` (an existing folder); return the package folder inside."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = tar.getmembers()
            root = _check_members(tarball, members)
            _check_sizes(tarball, tar, members, root)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"{tarball} is not a readable package tarball ({type(exc).__name__}: {exc})") from None
    return dest / root


def _check_members(tarball: Path, members: list[tarfile.TarInfo]) -> str:
    """The one top folder every entry lies in; InputError naming the first entry that is unsafe."""
    roots = set()
    for info in members:
        path = PurePosixPath(info.name)
        if not path.parts:
            raise InputError(f"{tarball}: refused: an entry has an empty name")
        escape = entry_escapes(info.name)
        if escape == "absolute":
            raise InputError(f"{tarball}: refused: entry '{info.name}' has an absolute path")
        if escape:
            raise InputError(f"{tarball}: refused: entry '{info.name}' points outside the package folder")
        if info.issym() or info.islnk():
            raise InputError(f"{tarball}: refused: entry '{info.name}' is a link")
        if not (info.isfile() or info.isdir()):
            raise InputError(f"{tarball}: refused: entry '{info.name}' is not a regular file")
        if info.isfile() and len(path.parts) != 2:
            raise InputError(f"{tarball}: refused: entry '{info.name}' is not a file in the package folder")
        roots.add(path.parts[0])
    if len(roots) != 1:
        raise InputError(f"{tarball}: refused: a package holds one folder, this has {len(roots)}")
    return roots.pop()


def _check_sizes(tarball: Path, tar: tarfile.TarFile, members: list[tarfile.TarInfo], root: str) -> None:
    """Refuse entries that add up to far more than the files the package's manifest lists."""
    manifest = next((m for m in members if m.name == f"{root}/{MANIFEST}"), None)
    if manifest is None:
        raise InputError(f"{tarball}: refused: no {root}/{MANIFEST} (not a medexport package)")
    if manifest.size > MAX_MANIFEST_BYTES:
        raise InputError(f"{tarball}: refused: its manifest is {manifest.size} bytes, more than a manifest can be")
    try:
        files = json.loads(tar.extractfile(manifest).read())["files"]
        listed = sum(int(entry["bytes"]) for entry in files.values())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"{tarball}: refused: {root}/{MANIFEST} is not a readable medexport manifest") from None
    total = sum(m.size for m in members)
    if total > listed + SIZE_SLACK_BYTES:
        raise InputError(f"{tarball}: refused: its entries hold {total} bytes, far beyond the {listed} bytes its "
                         "manifest lists")
