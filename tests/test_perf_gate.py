"""The performance gate (perf_gate.py) on sweeps made up here, and the perf figures in the reports."""

from pytest_vllm import perf_gate, perf_report, render


def point(concurrency, runs):
    """A sweep's point from per-run {metric: value} dicts, with perf.spread's shape."""
    metrics = runs[0].keys()
    spread = {
        m: {"min": min(r[m] for r in runs), "median": sorted(r[m] for r in runs)[1], "max": max(r[m] for r in runs)}
        for m in metrics
    }
    return {"max_concurrency": concurrency, "runs": runs, "spread": spread}


def run(scale=1.0, tpot=5.0, **changed):
    figures = {
        "median_ttft_ms": 50.0,
        "median_tpot_ms": tpot,
        "median_itl_ms": tpot,
        "median_e2el_ms": 200.0,
        "p99_e2el_ms": 260.0,
        "output_throughput": 300.0,
        "request_throughput": 9.0,
        "request_goodput": 9.0,
        "max_send_lag_ms": 0.4,
    }
    return {k: v * scale if k.endswith("throughput") else v for k, v in {**figures, **changed}.items()}


def sweep(*runs_by_point):
    return {
        "points": [point(2**i, list(runs)) for i, runs in enumerate(runs_by_point)],
        "best_max_concurrency": 1,
        "speedup": 1.0,
    }


def test_the_same_figures_pass_and_slower_ones_fail_naming_the_metric_and_ratio():
    baseline = sweep([run(), run(tpot=5.2), run(tpot=4.9)])
    assert perf_gate.regressions(baseline, baseline) == []
    slowed = sweep([run(tpot=10.0), run(tpot=10.4), run(tpot=9.8)])
    worse = perf_gate.regressions(baseline, slowed)
    assert {w.metric for w in worse} == {"median_tpot_ms", "median_itl_ms"}
    assert "median_tpot_ms at concurrency 1: 5 → 10, 2.00x worse than the baseline (tolerance 1.12)" in map(str, worse)


def test_lower_throughput_is_worse_and_higher_is_not():
    baseline = sweep([run(), run(), run()])
    assert [w.metric for w in perf_gate.regressions(baseline, sweep([run(0.5)] * 3))] == [
        "output_throughput",
        "request_throughput",
    ]
    assert perf_gate.regressions(baseline, sweep([run(2.0)] * 3)) == []


def test_the_tolerance_grows_with_the_noise_measured_on_either_side():
    quiet = sweep([run(), run(), run()])
    noisy = sweep([run(tpot=5.0), run(tpot=6.0), run(tpot=7.5)])  # max/min 1.5: tolerance 1 + 2 x 0.5
    assert perf_gate.tolerance("median_tpot_ms", quiet["points"][0], quiet["points"][0]) == perf_gate.MIN_TOLERANCE
    assert perf_gate.tolerance("median_tpot_ms", quiet["points"][0], noisy["points"][0]) == 2.0
    assert perf_gate.regressions(quiet, noisy) == []  # its median 6.0 is 1.2x: within its own noise
    assert [w.metric for w in perf_gate.regressions(quiet, noisy, given=1.1)] == ["median_tpot_ms", "median_itl_ms"]


def test_a_point_the_baseline_lacks_is_not_compared():
    assert perf_gate.regressions(sweep([run()] * 3), sweep([run()] * 3, [run(0.1)] * 3)) == []


def test_the_reports_show_each_sweep_as_a_table_and_the_html_plots_it():
    record = {
        "id": "suites/test_perf.py::test_serving_under_load[short]",
        "outcome": "passed",
        "properties": {"perf": sweep([run()] * 3, [run(1.8)] * 3)},
    }
    text = "\n".join(perf_report.text_lines([record]))
    assert "test_serving_under_load[short]: 3 runs a point" in text and "\n  2 | 540.0 (540.0-540.0) |" in text
    columns = render.targets({"checks": [record], "servers": []}, "r.json")
    markdown = render.render(columns, "md")
    assert "### Performance" in markdown and "| 1 | 300.0 (300.0-300.0) |" in markdown
    page = render.render(columns, "html")
    assert page.count("<svg") == 2 and "output throughput (tok/s) against concurrency" in page
