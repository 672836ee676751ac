"""A MONAI bundle as a model: ``--model path/to/bundle`` (a folder, or its ``.zip``).

The network comes from ``configs/inference.json`` (``network_def``, built by ``monai.bundle.ConfigParser``), its
weights from ``models/model.pt`` (``torch.load(weights_only=True)``), and the input channels, spatial shape and class
names from ``configs/metadata.json`` (``network_data_format``); ``medexport.loading`` turns it into a model.
Example::

    with open_bundle(Path("spleen_ct_segmentation.zip")) as bundle:
        network = bundle.network(trust=False)       # weights next: bundle.weights
        bundle.data_format()                        # ((1, 1, 96, 96, 96), ["background", "spleen"])

A bundle config is code: ``_target_`` can name any importable callable and a ``$`` string is evaluated as Python.
So, like a pickled checkpoint, it runs only what the user trusts: without ``--trust-pickle`` the ``network_def``
may only build classes of ``monai.networks`` from plain values (no ``$`` expressions, no ``@``/``%`` references into
the rest of the config, which could hold them). A zip is untrusted input too: an entry outside its folder, a link,
or a size far beyond reason is refused before anything is written, and it is unpacked into a temporary folder that
is removed once the network and weights are in memory.
"""
from __future__ import annotations

import contextlib
import json
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from medexport._io import entry_escapes, sha256
from medexport.errors import InputError, ModelLoadError

CONFIG = "configs/inference.json"
METADATA = "configs/metadata.json"
WEIGHTS = "models/model.pt"
MAX_UNPACKED_BYTES = 4 << 30   # a bundle of a 3D network is some hundred MB; more than this is a zip bomb
_CHUNK = 1 << 20


def is_bundle(path: Path) -> bool:
    """A folder holding ``configs/inference.json`` (at its top or one folder down), or a ``.zip``."""
    return path.suffix.lower() == ".zip" or (path.is_dir() and _root(path) is not None)


@dataclass
class Bundle:
    """An unpacked bundle: its folder, its two configs, and where its weights are."""

    root: Path
    config: dict
    metadata: dict
    provenance: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.root.name)

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS

    def network(self, *, trust: bool):
        """``network_def`` built by MONAI's ConfigParser; untrusted, only plain ``monai.networks`` classes."""
        return _network(self.config, self.root.name, trust=trust)

    def data_format(self, input_shape: tuple[int, ...] | None = None) -> tuple[tuple[int, ...], list[str] | None]:
        """(input shape with batch 1, class names) from ``network_data_format``; ``input_shape`` wins."""
        return _data_format(self.metadata, self.root.name, input_shape)


@contextlib.contextmanager
def open_bundle(path: Path) -> Iterator[Bundle]:
    """The bundle at ``path`` (folder or zip); a zip is unpacked into a temporary folder removed on exit."""
    if not path.exists():
        raise ModelLoadError(f"MONAI bundle not found: {path}")
    if path.suffix.lower() != ".zip":
        yield _read(path)
        return
    with tempfile.TemporaryDirectory(prefix="medexport-bundle-") as tmp:
        unpack_zip(path, Path(tmp))
        bundle = _read(Path(tmp))
        bundle.provenance["bundle_zip_sha256"] = sha256(path)
        yield bundle


def unpack_zip(archive: Path, dest: Path, limit: int | None = None) -> None:
    """Unpack ``archive`` into ``dest``; refuse (one line, nothing written) an entry outside it, a link, or more than
    ``limit`` bytes (default :data:`MAX_UNPACKED_BYTES`) in all, counted as the bytes come out, not as declared."""
    limit = MAX_UNPACKED_BYTES if limit is None else limit
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _check_member(archive, info)
            declared = sum(info.file_size for info in members)
            if declared > limit:
                raise InputError(f"{archive.name} unpacks to {declared} bytes, beyond the {limit} a bundle may hold")
            written = 0
            for info in members:
                target = dest / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > limit:   # the headers lied about the sizes
                            raise InputError(f"{archive.name} unpacks to more than the {limit} bytes a bundle may "
                                             "hold")
                        out.write(chunk)
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"{archive.name} is not a readable zip file: {exc}") from exc


def _check_member(archive: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    if entry_escapes(name):
        raise InputError(f"{archive.name}: entry '{name}' points outside the bundle folder; refusing the archive")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(f"{archive.name}: entry '{name}' is a link; refusing the archive")


def _root(folder: Path) -> Path | None:
    """The bundle's own folder: ``folder`` or its one subfolder holding ``configs/inference.json``."""
    if (folder / CONFIG).is_file():
        return folder
    found = [sub for sub in folder.iterdir() if sub.is_dir() and (sub / CONFIG).is_file()]
    return found[0] if len(found) == 1 else None


def _read(folder: Path) -> Bundle:
    root = _root(folder)
    if root is None:
        raise ModelLoadError(f"{folder.name} is not a MONAI bundle: no {CONFIG}")
    config, metadata = _read_json(root / CONFIG), _read_json(root / METADATA)
    if not (root / WEIGHTS).is_file():
        raise ModelLoadError(f"MONAI bundle {root.name} has no {WEIGHTS} (TorchScript-only bundles are not read)")
    provenance = {"monai_bundle": metadata.get("name") or root.name, "bundle_version": metadata.get("version"),
                  "config_sha256": sha256(root / CONFIG), "weights_sha256": sha256(root / WEIGHTS)}
    return Bundle(root, config, metadata, provenance)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelLoadError(f"MONAI bundle {path.parents[1].name} has no {path.parent.name}/{path.name}")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path.parent.name}/{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path.parent.name}/{path.name} must be a JSON object")
    return data


def _network(config: dict, bundle: str, *, trust: bool):
    """``network_def`` built by MONAI's ConfigParser; untrusted, only plain ``monai.networks`` classes."""
    if "network_def" not in config:
        raise ModelLoadError(f"{bundle}/{CONFIG} has no network_def")
    if not trust:
        _check_plain(config["network_def"], bundle)
    from monai.bundle import ConfigParser

    try:
        network = ConfigParser(config).get_parsed_content("network_def")
    except Exception as exc:  # noqa: BLE001 - ConfigParser and the network raise many types
        raise ModelLoadError(f"{bundle}: cannot build network_def: {type(exc).__name__}: "
                             f"{(str(exc).splitlines() or [''])[0][:200]}") from exc
    import torch

    if not isinstance(network, torch.nn.Module):
        raise ModelLoadError(f"{bundle}: network_def builds a {type(network).__name__}, not a torch module")
    return network


def _check_plain(node: Any, bundle: str) -> None:
    """Raise unless ``node`` holds only plain values and ``_target_``s in ``monai.networks``."""
    import monai.networks.nets

    if isinstance(node, dict):
        special = [key for key in node if str(key).startswith("_") and key != "_target_"]
        if special:   # _requires_ runs callables first, _mode_ "debug" opens a debugger
            raise ModelLoadError(f"{bundle}: network_def uses '{special[0]}'; a bundle config can run any code, pass "
                                 "--trust-pickle only if you trust this bundle")
        target = node.get("_target_")
        if target is not None:
            known = (str(target).startswith("monai.networks.") if "." in str(target)
                     else hasattr(monai.networks.nets, str(target)))
            if not known:
                raise ModelLoadError(f"{bundle}: network_def builds '{target}', which is not a monai.networks "
                                     "class; a bundle config can run any code, pass --trust-pickle only if you "
                                     "trust this bundle")
        for value in node.values():
            _check_plain(value, bundle)
    elif isinstance(node, list):
        for value in node:
            _check_plain(value, bundle)
    elif isinstance(node, str) and node.startswith(("$", "@", "%")):
        raise ModelLoadError(f"{bundle}: network_def uses '{node[:60]}', an expression or reference that runs as "
                             "Python; pass --trust-pickle only if you trust this bundle")


def _data_format(metadata: dict, bundle: str, input_shape) -> tuple[tuple[int, ...], list[str] | None]:
    fmt = metadata.get("network_data_format", {})
    image = fmt.get("inputs", {}).get("image", {})
    channel_def = fmt.get("outputs", {}).get("pred", {}).get("channel_def")
    classes = ([str(channel_def[k]) for k in sorted(channel_def, key=lambda k: int(k))]
               if isinstance(channel_def, dict) and all(str(k).isdigit() for k in channel_def) else None)
    if input_shape is not None:
        return tuple(input_shape), classes
    channels, spatial = image.get("num_channels"), image.get("spatial_shape")
    try:
        return (1, int(channels), *(int(s) for s in spatial)), classes
    except (TypeError, ValueError):
        raise InputError(f"{bundle}/{METADATA}: inputs.image gives num_channels {channels!r} and spatial_shape "
                         f"{spatial!r}, not fixed sizes; pass --input-shape") from None
