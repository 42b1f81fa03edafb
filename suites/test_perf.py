"""Performance under load (opt-in: --vllm-perf), measured as `vllm bench serve` measures it (pytest_vllm/perf.py).

Each workload is swept over concurrency 1, 2, 4, ... (all requests at once under the cap, 3 runs a point) until
output throughput stops growing. The figures go into the results file (`properties.perf`) and the reports.
A check fails when a request fails under load, when the streamed answers do not hold the tokens asked for
(`ignore_eos` with `max_tokens`: exactly that many, as `usage` counts them), or, with --vllm-baseline, when a
gated metric is worse than the baseline's beyond the tolerance (perf_gate.py).
"""

import asyncio

import pytest

from pytest_vllm import gate, perf, perf_gate, progress
from pytest_vllm.outcomes import Unsupported
from pytest_vllm.report import check_id, target_of
from pytest_vllm.verdicts import fingerprint

pytestmark = [pytest.mark.vllm_perf, pytest.mark.vllm_requires("completions", "vllm_sampling")]

# Small enough for a CPU, long enough that every metric is measured (TPOT needs 2 output tokens, ITL 2 chunks).
WORKLOADS = {
    "short": perf.Workload(input_len=32, output_len=32, num_prompts=32),
    "long-prompt": perf.Workload(input_len=256, output_len=8, num_prompts=16),
}
RUNS = 3  # per point: the spread the gate's tolerance is drawn from


@pytest.fixture
def baseline_perf(vllm, request):
    """The figures the baseline (--vllm-baseline) recorded for this check, or None."""
    if not vllm.settings.baseline:
        return None
    record = gate.load(vllm.settings.baseline).get(gate.with_target(check_id(request.node), target_of(request.node)))
    return (record or {}).get("properties", {}).get("perf")


@pytest.mark.parametrize("name", WORKLOADS)
def test_serving_under_load(vllm, vllm_server, name, record_property, baseline_perf):
    workload = WORKLOADS[name]
    longest = workload.input_len + workload.output_len
    with vllm.http(vllm_server, record=False) as http:  # the check's requests are perf.py's, not this listing
        models = http.get("/v1/models").json()["data"]
    listed = next((m for m in models if m["id"] == vllm_server.model), {})
    if listed.get("max_model_len", longest) < longest:
        raise Unsupported(f"unsupported: the model's max_model_len {listed['max_model_len']} < {longest} tokens")

    def say(step):
        progress.report(vllm.shared_dir, f"perf {name}: {step}")

    summary = asyncio.run(
        perf.sweep(
            vllm_server.base_url,
            vllm_server.model,
            workload,
            api_key=vllm_server.api_key,
            timeout=vllm.settings.request_timeout,
            goodput=dict(vllm.settings.perf_slo),
            runs=RUNS,
            progress=say,
        )
    )
    record_property("perf", {"workload": name, **summary})
    for point in summary["points"]:
        failed = [run for run in point["runs"] if run["failed"]]
        fingerprint(f"requests failed under load at concurrency {point['max_concurrency']}")
        assert not failed, (
            f"{failed[0]['failed']} of {workload.num_prompts} requests failed at concurrency "
            f"{point['max_concurrency']}: {failed[0]['first_error']}"
        )
        expected = workload.num_prompts * workload.output_len
        counted = {run["total_output_tokens"] for run in point["runs"]}
        fingerprint("usage does not count max_tokens output tokens with ignore_eos")
        assert counted == {expected}, (
            f"with ignore_eos and max_tokens {workload.output_len}, {workload.num_prompts} streamed answers should "
            f"hold {expected} output tokens by their usage, not {sorted(counted)} "
            f"(concurrency {point['max_concurrency']})"
        )
    if baseline_perf is not None:
        worse = perf_gate.regressions(baseline_perf, summary, vllm.settings.perf_tolerance)
        fingerprint("slower than the baseline: " + ", ".join(sorted({w.metric for w in worse})))
        assert not worse, "; ".join(str(w) for w in worse)
