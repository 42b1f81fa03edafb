"""pytest_vllm.perf against the instant endpoint, whose latencies are known: the metrics recover them."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import statistics

import pytest
from instant_endpoint import CHAT_TEMPLATE_TOKENS, InstantEndpoint

from pytest_vllm import perf
from pytest_vllm.perf import Load, PerfError, Workload, measure

# What a busy 2-core machine (vLLM serving beside, in another xdist worker) may add to an injected delay, and to
# a gap between chunks; a time from the send is never less than what was injected. Timing bounds stop there: that
# requests leave on schedule is shown by the lag the client reports being the true lateness, not by a clock bound.
SLACK_MS = 60.0
GAP_SLACK_MS = 15.0


def run(endpoint: InstantEndpoint, workload: Workload, load: Load, **kwargs) -> dict:
    return asyncio.run(measure(endpoint.url, "m", workload, load, timeout=30, **kwargs))


def cv(times: list[float]) -> float:
    """The coefficient of variation of the gaps between `times`."""
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return statistics.pstdev(gaps) / statistics.fmean(gaps)


def near(measured_ms: float, injected_s: float, slack_ms: float = SLACK_MS) -> bool:
    """A time from the send: never less than injected, at most `slack_ms` more."""
    return injected_s * 1000 - 1 <= measured_ms <= injected_s * 1000 + slack_ms


def near_gap(measured_ms: float, injected_s: float, slack_ms: float = GAP_SLACK_MS) -> bool:
    """A gap between chunks: a chunk read late makes its gap longer and the next one shorter."""
    return abs(measured_ms - injected_s * 1000) <= slack_ms


def test_the_metrics_recover_the_injected_latencies_and_the_token_totals_are_exact():
    with InstantEndpoint(ttft=0.05, itl=0.02) as endpoint:
        result = run(endpoint, Workload(input_len=16, output_len=6, num_prompts=16), Load(max_concurrency=4))
    assert near(result["median_ttft_ms"], 0.05)
    assert near_gap(result["median_itl_ms"], 0.02)
    assert near_gap(result["median_tpot_ms"], 0.02)
    assert near(result["median_e2el_ms"], 0.05 + 5 * 0.02, SLACK_MS + 5 * GAP_SLACK_MS)
    assert result["p99_ttft_ms"] >= result["p90_ttft_ms"] >= result["median_ttft_ms"] * 0.99
    assert (result["completed"], result["failed"], result["first_error"]) == (16, 0, None)
    assert (result["total_input_tokens"], result["total_output_tokens"]) == (16 * 16, 16 * 6)
    assert result["output_throughput"] == pytest.approx(96 / result["duration"])
    assert result["total_token_throughput"] == pytest.approx((256 + 96) / result["duration"])
    assert result["request_goodput"] is None  # no SLOs given, as vLLM reports


def test_prompts_are_token_ids_from_the_servers_vocabulary_drawn_reproducibly_from_the_seed():
    with InstantEndpoint() as endpoint:
        run(endpoint, Workload(input_len=12, output_len=2, num_prompts=3, seed=7), Load(), warmups=0)
        run(endpoint, Workload(input_len=12, output_len=2, num_prompts=3, seed=7), Load(), warmups=0)
        run(endpoint, Workload(input_len=12, output_len=2, num_prompts=3, seed=8), Load(), warmups=0)
    vocabulary = set(range(100, 100 + len(perf.SAMPLE_TEXT.split())))  # what its /tokenize gives
    prompts = [tuple(body["prompt"]) for body in endpoint.bodies]
    assert all(len(p) == 12 and set(p) <= vocabulary for p in prompts)
    assert sorted(prompts[:3]) == sorted(prompts[3:6]) != sorted(prompts[6:])
    assert len(set(prompts[:3])) == 3
    body = endpoint.bodies[0]
    assert (body["max_tokens"], body["ignore_eos"], body["stream_options"]) == (2, True, {"include_usage": True})


def test_without_tokenize_the_prompts_come_from_a_safe_id_range():
    with InstantEndpoint(tokenize=False) as endpoint:
        result = run(endpoint, Workload(input_len=10, output_len=2, num_prompts=2), Load(), warmups=0)
    assert result["total_input_tokens"] == 20
    assert all(set(body["prompt"]) <= set(perf.FALLBACK_IDS) for body in endpoint.bodies)


def test_itl_is_per_chunk_and_tpot_per_token_as_vllm_defines_them():
    with InstantEndpoint(ttft=0.02, itl=0.03, tokens_per_chunk=3) as endpoint:
        result = run(endpoint, Workload(input_len=4, output_len=9, num_prompts=2), Load(max_concurrency=2))
    assert result["total_output_tokens"] == 18  # from usage, not from the 3 chunks
    assert near_gap(result["median_itl_ms"], 0.03)
    assert near_gap(result["median_tpot_ms"], 2 * 0.03 / 8, GAP_SLACK_MS / 4)  # (E2EL - TTFT) / (output - 1)


def test_goodput_counts_the_requests_within_every_named_slo():
    # Every 4th request waits 300 ms for its first token, the others 10 ms; ITL 20 ms.
    with InstantEndpoint(ttft=0.01, itl=0.02, slow_every=4, slow_ttft=0.3) as endpoint:
        workload, load = Workload(input_len=4, output_len=3, num_prompts=8), Load(max_concurrency=8)
        by_ttft = run(endpoint, workload, load, goodput={"ttft": 150}, warmups=0)
        by_both = run(endpoint, workload, load, goodput={"ttft": 150, "tpot": 5}, warmups=0)
        by_e2el = run(endpoint, workload, load, goodput={"e2el": 1000}, warmups=0)
    assert by_ttft["request_goodput"] * by_ttft["duration"] == pytest.approx(6)
    assert by_both["request_goodput"] == 0
    assert by_e2el["request_goodput"] == pytest.approx(by_e2el["request_throughput"])


def test_failed_requests_are_counted_with_the_first_error():
    with InstantEndpoint(fail_every=3) as endpoint:
        result = run(endpoint, Workload(input_len=4, output_len=2, num_prompts=9), Load(max_concurrency=1), warmups=0)
    assert (result["completed"], result["failed"]) == (6, 3)
    assert result["first_error"].startswith("HTTP 500") and "injected failure of request 3" in result["first_error"]
    assert result["total_output_tokens"] == 12


def test_a_request_over_its_timeout_fails_and_says_so():
    with InstantEndpoint(ttft=2.0) as endpoint:
        result = asyncio.run(measure(endpoint.url, "m", Workload(4, 2, 1), Load(), timeout=0.3, warmups=0))
    assert result["failed"] == 1 and "0.3 s timeout" in result["first_error"]


def test_a_failing_warm_up_or_an_impossible_workload_stops_the_measurement_with_why():
    with InstantEndpoint(fail_every=1) as endpoint, pytest.raises(PerfError, match="1 of 1 warm-up requests"):
        run(endpoint, Workload(4, 2, 2), Load())
    with InstantEndpoint() as endpoint, pytest.raises(PerfError, match="exceeds the model's max_model_len 4096"):
        run(endpoint, Workload(4000, 200, 1), Load())
    with pytest.raises(ValueError, match="goodput SLO ttfb"):
        perf.parse_goodput(["ttfb:100"])


def test_the_api_key_is_sent_and_never_in_the_result():
    with InstantEndpoint(api_key="sk-secret") as endpoint:
        result = run(endpoint, Workload(4, 2, 2), Load(), api_key="sk-secret")
        with pytest.raises(PerfError, match="401"):
            run(endpoint, Workload(4, 2, 2), Load())
    assert result["completed"] == 2 and "sk-secret" not in json.dumps(result)


def test_chat_and_unstreamed_workloads():
    with InstantEndpoint(ttft=0.03, itl=0.01) as endpoint:
        chat = run(endpoint, Workload(input_len=8, output_len=4, num_prompts=2, chat=True), Load())
        whole = run(endpoint, Workload(input_len=8, output_len=4, num_prompts=2, stream=False), Load())
    assert chat["total_input_tokens"] == 2 * (8 + CHAT_TEMPLATE_TOKENS)  # the template's tokens, from usage
    assert chat["total_output_tokens"] == 8
    assert 29 <= chat["median_ttft_ms"] < chat["median_e2el_ms"]  # the first chunk's time, not the last's
    assert whole["median_e2el_ms"] >= 59  # the whole answer's time (its accuracy: the streamed tests above)
    assert whole["median_ttft_ms"] is None and whole["mean_itl_ms"] is None and whole["total_output_tokens"] == 8


def test_arrival_times_are_gamma_gaps_rescaled_to_end_at_n_over_rate():
    poisson = perf.arrival_times(4000, 50.0, 1.0, random.Random(1))
    gaps = [b - a for a, b in itertools.pairwise([0.0, *poisson])]
    assert poisson[-1] == pytest.approx(4000 / 50.0) and statistics.fmean(gaps) == pytest.approx(1 / 50)
    assert cv(poisson) == pytest.approx(1.0, abs=0.06)  # exponential gaps
    bursty = perf.arrival_times(4000, 50.0, 0.25, random.Random(1))
    even = perf.arrival_times(4000, 50.0, math.inf, random.Random(1))
    assert cv(bursty) == pytest.approx(2.0, rel=0.1) and cv(even) == pytest.approx(0, abs=1e-9)  # 1/sqrt(shape)
    assert perf.arrival_times(3, math.inf, 1.0, random.Random(1)) == [0.0, 0.0, 0.0]
    assert poisson == perf.arrival_times(4000, 50.0, 1.0, random.Random(1))


def test_poisson_arrivals_leave_on_schedule_or_say_how_late():
    with InstantEndpoint(ttft=0.005) as endpoint:
        result = run(
            endpoint, Workload(input_len=4, output_len=1, num_prompts=120), Load(request_rate=200.0), detailed=True
        )
    due = perf.arrival_times(120, 200.0, 1.0, random.Random("a0"))  # the schedule measure() draws (seed 0)
    assert due[-1] == pytest.approx(120 / 200.0)
    for sent, lag, scheduled in zip(result["start_times"], result["send_lags"], due, strict=True):
        assert sent >= scheduled - 0.002, "a request left before it was due"
        assert sent == pytest.approx(scheduled + lag, abs=0.002), "the lag reported is the lateness"
    assert result["request_rate"] == 200.0 and result["max_concurrency"] is None


def test_a_concurrency_cap_holds():
    with InstantEndpoint(ttft=0.02, itl=0.0, max_parallel=64) as endpoint:
        result = run(
            endpoint, Workload(input_len=4, output_len=2, num_prompts=32), Load(max_concurrency=4), detailed=True
        )
    starts, latencies = result["start_times"], result["latencies"]
    spans = [(start, start + latency) for start, latency in zip(starts, latencies, strict=True)]
    in_flight = [sum(1 for s, e in spans if s <= start < e) for start, _ in spans]
    assert max(in_flight) == 4, "never more than 4 requests at once, and 4 when all are waiting"
    assert result["duration"] >= 8 * 0.02, "8 waves of 4, 20 ms each"


def test_a_sweep_doubles_concurrency_until_throughput_stops_growing():
    seen: list[perf.SweepProgress] = []
    # The endpoint answers at most 2 requests at once, 40 ms each: throughput doubles from 1 to 2, not from 2 to 4.
    with InstantEndpoint(ttft=0.03, itl=0.005, max_parallel=2) as endpoint:
        summary = asyncio.run(
            perf.sweep(endpoint.url, "m", Workload(4, 3, 8), runs=3, min_gain=0.3, timeout=30, progress=seen.append)
        )
    assert [p["max_concurrency"] for p in summary["points"]] == [1, 2, 4]
    assert summary["best_max_concurrency"] in (2, 4) and summary["speedup"] == pytest.approx(2.0, rel=0.2)
    assert [(s.point, s.run) for s in seen] == [(p, r) for p in (1, 2, 3) for r in (1, 2, 3)]
    assert seen[0].left_s is None and seen[1].left_s > 0 and "perf point 1 (concurrency 1), run 2/3" in str(seen[1])
    first = summary["points"][0]["spread"]["output_throughput"]
    assert first["min"] <= first["median"] <= first["max"] and len(summary["points"][0]["runs"]) == 3
    assert "best concurrency" in perf.format_sweep(summary)
    seeds = [run["seed"] for point in summary["points"] for run in point["runs"]]
    assert seeds == list(range(9)), "each run draws prompts of its own: none is served from another's prefix cache"


def test_spread_gives_min_median_max_of_each_metric():
    runs = [{"duration": d, "first_error": None, "num_prompts": 8, "request_goodput": None} for d in (3.0, 1.0, 2.0)]
    assert perf.spread(runs) == {"duration": {"min": 1.0, "median": 2.0, "max": 3.0}}


def test_percentile_interpolates_as_numpy():
    assert perf.percentile([4.0, 1.0, 3.0, 2.0], 90) == pytest.approx(3.7)
    assert perf.percentile([5.0], 99) == 5.0 and perf.percentile([], 99) == 0.0


def test_the_command_line_prints_a_table_and_writes_json(tmp_path, capsys):
    with InstantEndpoint(ttft=0.01) as endpoint:
        args = f"--url {endpoint.url} --model m --input-len 4 --output-len 2 --num-prompts 4 --runs 2"
        perf.main([*args.split(), "--goodput", "ttft:500", "--json", str(tmp_path / "out.json")])
    table = capsys.readouterr().out
    assert "output tokens/s" in table and "min / median / max" in table
    saved = json.loads((tmp_path / "out.json").read_text())
    assert len(saved["results"]) == 2 and saved["goodput"] == {"ttft": 500.0}
