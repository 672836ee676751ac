"""report.json follows the shipped, versioned JSON Schema, and every documented key is checked."""
import copy

import pytest

from medexport.bench.schema import SCHEMA_VERSION, report_schema, validate_report
from medexport.errors import InputError
from tests.bench._reports import bench_report

pytest.importorskip("jsonschema")


def documented(kind: str) -> list[tuple[str, ...]]:
    """Paths of the keys the schema says a report of ``kind`` always has."""
    defs = report_schema()["$defs"]
    paths = [(key,) for key in report_schema()["required"] + defs[kind]["required"]]
    if kind == "bench":
        entry = defs["bench"]["properties"]["entries"]["items"]["required"]
        paths += [("entries", 0, key) for key in entry]
        paths += [("entries", 0, "latency", 0, key) for key in defs["latency"]["required"]]
        paths += [("comparison", 0, key) for key in defs["bench"]["properties"]["comparison"]["items"]["required"]]
        paths += [("environment", key) for key in defs["environment"]["required"]]
    return sorted(set(paths), key=str)


def without(report: dict, path: tuple) -> dict:
    copied = copy.deepcopy(report)
    node = copied
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return copied


def test_a_bench_report_follows_the_schema():
    report = bench_report()
    assert report["schema_version"] == SCHEMA_VERSION and report["kind"] == "bench"
    validate_report(report)


@pytest.mark.parametrize("path", documented("bench"), ids=lambda p: "/".join(map(str, p)))
def test_the_schema_refuses_a_bench_report_without_a_documented_key(path):
    with pytest.raises(InputError, match="does not follow schema version 1"):
        validate_report(without(bench_report(), path))


def test_the_schema_refuses_wrong_types_and_versions():
    report = bench_report()
    report["entries"][0]["latency"][0]["p99_ms"] = "fast"       # any *_ms statistic must be a number
    with pytest.raises(InputError, match="entries/0/latency/0/p99_ms"):
        validate_report(report)
    with pytest.raises(InputError, match="schema_version"):
        validate_report({**bench_report(), "schema_version": 2})
