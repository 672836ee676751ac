"""`medexport verify`: builds and packages match their manifests; tarballs are untrusted input."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from medexport.cli import cli


@pytest.fixture(scope="module")
def package(int8_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "pkg"
    result = CliRunner().invoke(cli, ["package", str(int8_build), "--target", "onnxruntime", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def verify(path):
    return CliRunner().invoke(cli, ["verify", str(path)])


def refused(result, *fragments):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("medexport: error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_fresh_package_build_and_tarball_pass(int8_build, package):
    for path, kind in ((int8_build, "build"), (package, "package"), (package.with_name("pkg.tar.gz"), "package")):
        result = verify(path)
        assert result.exit_code == 0 and f"{kind} OK" in result.output, result.output


@pytest.mark.parametrize("kind", ["build", "package"])
def test_a_changed_byte_a_deleted_file_and_an_added_file_fail_naming_it(kind, int8_build, package, tmp_path):
    source = int8_build if kind == "build" else package
    folder = tmp_path / kind
    shutil.copytree(source, folder)
    name = "model.onnx" if kind == "build" else "model.int8.qdq.onnx"
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 1
    (folder / name).write_bytes(bytes(data))
    refused(verify(folder), name, "changed")
    shutil.copy(source / name, folder / name)
    assert verify(folder).exit_code == 0
    (folder / "labels.json" if kind == "package" else folder / "report.md").unlink()
    refused(verify(folder), "labels.json" if kind == "package" else "report.md", "missing")
    shutil.copytree(source, folder, dirs_exist_ok=True)
    (folder / "extra.onnx").write_bytes(b"x")
    refused(verify(folder), "extra.onnx", "not listed")
    if kind == "build":   # the reports `validate` and `bench` write into a build folder are not foreign
        (folder / "extra.onnx").unlink()
        (folder / "model.onnx.bench.json").write_text("{}")
        assert verify(folder).exit_code == 0


def _tarball(path, entries, manifest_bytes=10):
    """A gzip tarball with a valid-looking package manifest under ``pkg/`` plus ``entries``."""
    manifest = json.dumps({"medexport_package": 1, "files": {"a.txt": {"sha256": "0" * 64,
                                                                        "bytes": manifest_bytes}}}).encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("pkg/manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"evil"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("entry,fragment", [
    (_file("pkg/../escaped.txt"), "outside the package folder"),
    (_file("../escaped.txt"), "outside the package folder"),
    (_file("/tmp/medexport-absolute-escape.txt"), "absolute path"),
    (_link("pkg/a.txt", "/etc/passwd", tarfile.SYMTYPE), "is a link"),
    (_link("pkg/a.txt", "pkg/manifest.json", tarfile.LNKTYPE), "is a link"),
    (_file("pkg/big.bin", bytes(8 << 20)), "far beyond"),
])
def test_an_unsafe_tarball_is_refused_with_nothing_written_outside(entry, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tarball = _tarball(tmp_path / "x.tar.gz", [entry])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    refused(verify(tarball), fragment)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/medexport-absolute-escape.txt").exists()
