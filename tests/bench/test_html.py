"""report.html: self-contained, opens in headless Chromium without console errors, and its plots are drawn."""
import json
import re

import pytest

from medexport.bench.html import report_html
from medexport.bench.plots import pareto_front, quantile_of
from medexport.bench.report import bench_markdown
from tests._chromium import PLOTS, blank_fraction, needs_chromium, open_page
from tests.bench._reports import bench_report

pytest.importorskip("matplotlib")


@needs_chromium
def test_the_bench_report_renders_in_chromium_with_its_plots(tmp_path):
    page_path = tmp_path / "report.html"
    page_path.write_text(report_html(bench_report()))
    page = open_page(page_path, PLOTS)
    assert page.errors == []
    assert page.requests == [page_path.as_uri()]          # self-contained: nothing else was fetched
    figures = json.loads(page.values)
    assert {"plot-latency", "plot-pareto"} <= set(figures) and any(f.startswith("plot-layers") for f in figures)
    for ident, (paths, width) in figures.items():
        assert paths >= 5 and width > 300, (ident, paths, width)
    assert blank_fraction(page.screenshot) < 0.97            # not a blank page


@needs_chromium
def test_the_checker_sees_a_console_error_and_a_fetch(tmp_path):
    """The browser check can fail: a page that logs an error, throws and fetches from the network is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('no plot');undefinedCall();</script>"
                   "<img src='http://example.invalid/plot.png'></body></html>")
    page = open_page(bad, "document.querySelectorAll('figure.plot').length")
    assert "no plot" in page.errors and any("Uncaught" in e for e in page.errors)
    assert "http://example.invalid/plot.png" in page.requests and page.values == 0


def test_statistics_a_newer_harness_adds_show_up_unchanged():
    report = bench_report()
    html, markdown = report_html(report), bench_markdown(report)
    for key in ("p95_ms", "p99_9_ms"):
        assert f"<th>{key.replace('_ms', ' ms')}</th>" in html and f"| {key} |" in markdown.replace(" | ", " |\n| ")
    assert quantile_of("p99_9_ms") == 99.9 and quantile_of("p999_ms") == 99.9 and quantile_of("mean_ms") is None
    assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?(https?:|//)", html)   # nothing to fetch
    assert "<script" not in html


def test_the_pareto_front_keeps_what_nothing_beats():
    points = [{"name": n, "median_ms": ms, "value": v} for n, ms, v in
              [("fp32", 10, 0.90), ("int8", 6, 0.89), ("svd", 8, 0.85), ("fast", 4, 0.80)]]
    assert [p["name"] for p in pareto_front(points)] == ["fast", "int8", "fp32"]   # svd: int8 is faster and better


def test_without_matplotlib_the_page_keeps_its_tables_and_says_why(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)   # import fails as if matplotlib were absent
    html = report_html(bench_report())
    assert "<svg" not in html and "plots need matplotlib: pip install 'medexport[report]'" in html
    assert "<td>compressed</td>" in html and "white_matter" in html
