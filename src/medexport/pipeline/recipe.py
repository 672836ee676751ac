"""Rebuild from a manifest: its config, and what it recorded of its inputs, to check them against.

A manifest keeps no paths to the user's files; a re-run is given the model file and images again, and
the model's provenance (hashes of its weights) and the digests of the images read must match. Example::

    config, expected = read_recipe("out/unet-openvino/manifest.json", out_dir="out/again", calib="scans/")
    run_build(config, expected=expected)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from medexport import __version__
from medexport.errors import InputError
from medexport.loading import ModelSpec
from medexport.pipeline.config import BuildConfig


def read_recipe(path: str | Path, *, out_dir: str | Path, model: dict[str, Any] | None = None,
                **images: str | None) -> tuple[BuildConfig, dict[str, Any]]:
    """The config of the build that wrote the manifest at ``path`` (into ``out_dir``), with the model fields in
    ``model`` (``model``, ``weights``, ``trust_pickle``: the file given again) and the image options given again
    (``calib``, ``data``, ``labels``) in place of the recipe's; and the recorded
    ``provenance`` and ``data_digests`` that :func:`~medexport.pipeline.run_build` checks."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"recipe not found: {path}")
    if Path(out_dir).resolve() == path.parent.resolve():
        raise InputError(f"--out {out_dir} is the recipe's own build folder, whose manifest a rebuild would replace: "
                         "give another --out")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"recipe {path.name} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or "medexport_manifest" not in manifest or "config" not in manifest:
        raise InputError(f"{path.name} is not a medexport build manifest (manifest.json of a build folder)")
    config = BuildConfig.from_dict(manifest["config"], out_dir)
    given = {key: value for key, value in images.items() if value is not None}
    if given:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, **given))
    if model:
        config = dataclasses.replace(config, model=ModelSpec(**{**dataclasses.asdict(config.model), **model}))
    missing = config.data.missing()
    if missing:
        raise InputError(f"this recipe was built with your own images: pass them again with {', '.join(missing)}")
    expected = {"provenance": manifest.get("provenance"), "data_digests": manifest.get("data_digests") or {}}
    written_by = manifest.get("medexport_version")
    if written_by != __version__:
        expected["note"] = (f"the recipe was written by medexport {written_by or 'unknown'}, this is {__version__}: "
                            "options it did not record take this version's defaults")
    return config, expected
