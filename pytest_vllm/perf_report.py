"""The performance checks' figures (suites/test_perf.py, `properties.perf` of their records) in the reports: a
table per sweep for the terminal and Markdown, and for HTML the table with two plots, latency per concurrency
and output throughput against concurrency. Figures are medians over a point's runs, ranges min-max.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape
from typing import Any

_COLUMNS = (  # (key in a point's spread, heading, format)
    ("output_throughput", "output tok/s", "{:.1f}"),
    ("request_throughput", "req/s", "{:.2f}"),
    ("request_goodput", "good req/s", "{:.2f}"),
    ("median_ttft_ms", "TTFT ms", "{:.1f}"),
    ("median_tpot_ms", "TPOT ms", "{:.2f}"),
    ("median_itl_ms", "ITL ms", "{:.2f}"),
    ("median_e2el_ms", "E2EL ms", "{:.0f}"),
    ("p99_e2el_ms", "p99 E2EL ms", "{:.0f}"),
    ("max_send_lag_ms", "client lag ms (max)", "{:.1f}"),
)
_LATENCIES = (("median_ttft_ms", "TTFT"), ("median_tpot_ms", "TPOT"), ("median_e2el_ms", "E2EL"))
_COLOURS = ("#2563eb", "#16a34a", "#dc2626", "#9333ea")


def sweeps(records: Iterable[dict]) -> list[tuple[str, dict[str, Any]]]:
    """(check id, sweep) of every record that holds performance figures."""
    return [
        (r["id"], r["properties"]["perf"]) for r in records if isinstance(r.get("properties", {}).get("perf"), dict)
    ]


def _cells(point: dict[str, Any]) -> list[str]:
    cells = []
    for key, _, fmt in _COLUMNS:
        figure = point["spread"].get(key)
        if figure is None:
            cells.append("-")
        elif key == "output_throughput":
            cells.append(f"{fmt.format(figure['median'])} ({fmt.format(figure['min'])}-{fmt.format(figure['max'])})")
        else:
            cells.append(fmt.format(figure["max" if key.startswith("max_") else "median"]))
    return cells


def _title(check: str, sweep: dict[str, Any]) -> str:
    runs = len(sweep["points"][0]["runs"]) if sweep["points"] else 0
    speedup = sweep.get("speedup")
    gain = f", {speedup:.2f}x concurrency 1 at concurrency {sweep['best_max_concurrency']}" if speedup else ""
    return f"{check}: {runs} runs a point{gain}"


def text_lines(records: Iterable[dict]) -> list[str]:
    lines = []
    for check, sweep in sweeps(records):
        lines += [f"perf {_title(check, sweep)}", "  " + " | ".join(["concurrency", *(h for _, h, _ in _COLUMNS)])]
        lines += ["  " + " | ".join([str(p["max_concurrency"]), *_cells(p)]) for p in sweep["points"]]
    return lines


def markdown_lines(columns: list[tuple[str, Iterable[dict]]]) -> list[str]:
    """A table per sweep, under each column's (target's) name."""
    lines = []
    for name, records in columns:
        for check, sweep in sweeps(records):
            lines += ["", f"**{name}**: `{_title(check, sweep)}`", ""]
            lines += [
                "| concurrency | " + " | ".join(h for _, h, _ in _COLUMNS) + " |",
                "|---:" * (len(_COLUMNS) + 1) + "|",
            ]
            lines += ["| " + " | ".join([str(p["max_concurrency"]), *_cells(p)]) + " |" for p in sweep["points"]]
    return ["", "### Performance", *lines] if lines else []


def html(columns: list[tuple[str, Iterable[dict]]]) -> str:
    """The section: per sweep its table and plots (inline SVG: the page stays standalone)."""
    parts = []
    for name, records in columns:
        for check, sweep in sweeps(records):
            head = "".join(f"<th>{escape(h)}</th>" for _, h, _ in _COLUMNS)
            rows = "".join(
                f"<tr><td>{p['max_concurrency']}</td>" + "".join(f"<td>{escape(c)}</td>" for c in _cells(p)) + "</tr>"
                for p in sweep["points"]
            )
            latency = [(label, _series(sweep, key)) for key, label in _LATENCIES]
            throughput = [("tok/s", _series(sweep, "output_throughput"))]
            parts.append(
                f"<h3>{escape(name)}: {escape(_title(check, sweep))}</h3>"
                f"<table><tr><th>concurrency</th>{head}</tr>{rows}</table>"
                f'<div class="plots">{_plot("latency (median, ms) per concurrency", latency, log_y=True)}'
                f"{_plot('output throughput (tok/s) against concurrency', throughput)}"
                "</div>"
            )
    return f"<section><h2>Performance</h2>{''.join(parts)}</section>" if parts else ""


def _series(sweep: dict[str, Any], key: str) -> list[tuple[float, float]]:
    return [
        (p["max_concurrency"], p["spread"][key]["median"])
        for p in sweep["points"]
        if p["spread"].get(key) and p["spread"][key]["median"] > 0
    ]


def _plot(title: str, series: list[tuple[str, list[tuple[float, float]]]], log_y: bool = False) -> str:
    """A line plot over concurrency (log2 x) in SVG, one line a series, with its axes' end values."""
    width, height, pad = 360, 200, 40
    points = [xy for _, line in series for xy in line]
    if not points:
        return ""
    xs = [math.log2(x) for x, _ in points]
    ys = [math.log10(y) if log_y else y for _, y in points]
    x0, x1, y0, y1 = min(xs), max(xs) or 1, 0 if not log_y else min(ys), max(ys)
    span_x, span_y = (x1 - x0) or 1, (y1 - y0) or 1

    def at(x: float, y: float) -> str:
        fx = pad + (math.log2(x) - x0) / span_x * (width - 2 * pad)
        fy = height - pad - ((math.log10(y) if log_y else y) - y0) / span_y * (height - 2 * pad)
        return f"{fx:.1f},{fy:.1f}"

    lines = "".join(
        f'<polyline fill="none" stroke="{_COLOURS[i % len(_COLOURS)]}" stroke-width="2" '
        f'points="{" ".join(at(x, y) for x, y in line)}"><title>{escape(label)}</title></polyline>'
        f'<text x="{width - pad + 4}" y="{at(*line[-1]).split(",")[1]}" font-size="10" '
        f'fill="{_COLOURS[i % len(_COLOURS)]}">{escape(label)}</text>'
        for i, (label, line) in enumerate(series)
        if line
    )
    top = 10**y1 if log_y else y1
    bottom = 10**y0 if log_y else y0
    return (
        f'<svg role="img" width="{width + 40}" height="{height}" viewBox="0 0 {width + 40} {height}">'
        f"<title>{escape(title)}</title>"
        f'<text x="{pad}" y="14" font-size="12">{escape(title)}</text>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>'
        f'<text x="{pad}" y="{height - pad + 14}" font-size="10">{2**x0:.0f}</text>'
        f'<text x="{width - pad}" y="{height - pad + 14}" font-size="10">{2**x1:.0f}</text>'
        f'<text x="2" y="{height - pad}" font-size="10">{_tick(bottom)}</text>'
        f'<text x="2" y="{pad}" font-size="10">{_tick(top)}</text>{lines}</svg>'
    )


def _tick(value: float) -> str:
    """An axis label: 1,551 rather than 1.55e+03."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
