"""The versioned schema of report.json (``report.schema.json``, shipped in the package) and its check.

Both `medexport build` and `medexport bench` stamp their report with :data:`SCHEMA_VERSION` and a ``kind``; a
reader checks a report with :func:`validate_report` (needs ``jsonschema``, in the ``dev`` extra).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from medexport.errors import InputError

SCHEMA_VERSION = 1


def stamped(report: dict[str, Any], kind: str) -> dict[str, Any]:
    """``report`` with the schema version and kind first, as report.json is written."""
    return {"schema_version": SCHEMA_VERSION, "kind": kind, **report}


@lru_cache(maxsize=1)
def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every report.json follows."""
    return json.loads(resources.files("medexport.bench").joinpath("report.schema.json").read_text())


def validate_report(report: dict[str, Any]) -> None:
    """Raise InputError naming the first place where ``report`` breaks the schema."""
    try:
        import jsonschema
    except ImportError:
        raise InputError("checking a report needs jsonschema: pip install 'medexport[dev]'") from None
    validator = jsonschema.Draft202012Validator(report_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(report))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "(top level)"
        raise InputError(f"report.json does not follow schema version {SCHEMA_VERSION} at {where}: {error.message}")
