"""The `medexport` command line: one module per verb, thin (parse, call the library, print).

Every user error is a :class:`~medexport.errors.MedexportError`; :func:`main` prints it on one line and
exits 1, with no traceback. Usage errors (unknown option or choice) also print one line and exit 2.
"""
from __future__ import annotations

import sys
import warnings

import click

from medexport import __version__
from medexport.errors import DataWarning, MedexportError


class _Group(click.Group):
    """In click's standalone mode (:func:`main`, ``CliRunner``, a plain ``cli()`` call) every error is one line and
    a non-zero exit; with ``standalone_mode=False`` errors are raised for the caller."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.Abort:
            click.echo("medexport: aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            click.echo(f"medexport: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except MedexportError as exc:
            click.echo(f"medexport: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("medexport: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="medexport")
def cli() -> None:
    """Compress, export, build, validate and benchmark PyTorch medical-imaging networks.

    With no --model, commands use the bundled, trained reference model (a 2D brain-tissue U-Net).
    """


def _register() -> None:
    from medexport.cli import (bench, build, compress, export, inspect, package, quantize, trt_check, validate,
                               verify)

    for module in (inspect, export, compress, quantize, build, validate, bench, package, verify, trt_check):
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line and a non-zero exit."""
    cli.main(args=argv, prog_name="medexport")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Data warnings (files skipped, with their reasons) as one line each; others as Python prints them."""
    if issubclass(category, DataWarning):
        click.echo(f"medexport: warning: {message}", err=True)
    else:
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))
