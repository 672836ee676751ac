"""Output folders: checked before any work, filled through a hidden staging folder beside them.

A command writes into ``.<out>.<random>.partial`` (same parent, so the same file system) and moves its files into
``--out`` only when it succeeded. A failure or Ctrl-C at any point removes the staging folder and any folder the
command created, so ``--out`` is left exactly as it was: a previous build whole with its manifest, or absent;
except for the fine-tuning checkpoints (``CHECKPOINTS``), written straight into ``--out`` so that a failed or
interrupted run leaves them for ``--resume``, and removed when a command succeeds (nothing is left to resume).
Tracking written files instead could remove new files but not bring back the previous build's files they
overwrote. Example::

    check_out(out)                      # before any work: one line if --out cannot be written
    with staged(out, build=True) as tmp:
        ...write into tmp...            # moved into out, manifest.json last, when the block succeeds
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from medexport.errors import InputError
from medexport.pipeline.manifest import BUILD_RECORD, MANIFEST, listed_files

CHECKPOINTS = "finetune-checkpoints"  # the folder of --out that a failure keeps, for --resume


def check_out(out: Path, flag: str = "--out") -> None:
    """Raise InputError unless ``out`` is a writable folder or can be created as one; creates nothing."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{flag} {out} exists and is not a folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise InputError(f"{flag} {out} is not writable")
        return
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {out} cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {out} cannot be created: {parent} is not writable")


@contextlib.contextmanager
def staged(out: Path, *, build: bool) -> Iterator[Path]:
    """A staging folder for a command that writes into ``out``; its files replace their namesakes in ``out`` when
    the block succeeds. ``build``: the files are a whole build (its manifest last), which replaces the build the
    folder held and drops that build's files it did not write again; otherwise (export, quantize, compress) the
    files invalidate a build the folder held: its manifest and reports are removed, as they no longer describe
    the folder. On failure, a build also drops a stale report (one with no manifest) from ``out``."""
    out = Path(out)
    check_out(out)
    created = [folder for folder in (out.absolute(), *out.absolute().parents) if not folder.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        _commit(staging, out, build)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if out.absolute() in created:   # everything in it is this command's; its checkpoints stay for --resume
            for path in out.iterdir() if out.is_dir() else ():
                if path.name == CHECKPOINTS:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for folder in created:   # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        if build and out.is_dir() and not (out / MANIFEST).exists():
            for name in BUILD_RECORD:
                (out / name).unlink(missing_ok=True)
        raise


def _commit(staging: Path, out: Path, build: bool) -> None:
    """Move the staged files into ``out``: the folder holds no manifest while files change, one (a build's) at
    the end."""
    out.mkdir(exist_ok=True)
    replaced = listed_files(out) if build else set()
    for name in BUILD_RECORD if not build else (MANIFEST,):
        (out / name).unlink(missing_ok=True)
    new = {path.name for path in staging.iterdir()}
    for name in sorted(new - {MANIFEST}):
        dest = out / name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(staging / name, dest)
    for name in replaced - new:   # the previous build's files this one did not write again
        (out / name).unlink(missing_ok=True)
    if MANIFEST in new:
        os.replace(staging / MANIFEST, out / MANIFEST)
    staging.rmdir()
