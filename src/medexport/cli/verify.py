"""`medexport verify`: a package or build folder (or package .tar.gz) still matches its manifest."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("verify")
@click.argument("path", metavar="PACKAGE_OR_BUILD", type=click.Path())
def command(path) -> None:
    """Check every file of PACKAGE_OR_BUILD against the sha256 in its manifest.json; a changed, missing or added
    file fails, naming it. A .tar.gz package is checked for unsafe entries before anything is extracted."""
    from medexport.packaging import verify_path

    result = verify_path(Path(path))
    click.echo(f"{result['path']}: {result['kind']} OK ({result['files']} files match the manifest)")
