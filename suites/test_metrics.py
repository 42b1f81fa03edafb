"""GET /metrics: Prometheus text carrying vLLM's request counters, and the counters move.

Counter names as vLLM defines them (vllm/v1/metrics/loggers.py); on the wire a counter
`vllm:x` is the sample `vllm:x_total`. Other requests may run at the same time (other checks,
xdist workers, other clients), so a counter must grow by AT LEAST what one request adds.
"""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pytest_vllm.verdicts import fingerprint

pytestmark = pytest.mark.vllm_requires("metrics")

FAMILIES = {
    "vllm:request_success": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
}
_SETTLE_SECONDS = 3.0  # vLLM records a finished request's stats just after answering it


def _families(http) -> dict:
    response = http.get("/metrics")
    assert response.status_code == 200, f"GET /metrics answered {response.status_code}"
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def _total(families: dict, name: str, **labels: str) -> float:
    """The sum of a counter's `_total` samples (all engines and models) matching `labels`."""
    return sum(
        sample.value
        for sample in families[name].samples
        if sample.name == name + "_total" and labels.items() <= sample.labels.items()
    )


def test_metrics_parse_as_prometheus_text(vllm_http):
    response = vllm_http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain"), (
        f"Prometheus text exposition is served as text/plain, got {response.headers['content-type']!r}"
    )
    names = [family.name for family in text_string_to_metric_families(response.text)]
    assert any(name.startswith("vllm:") for name in names), f"no vllm: metric among {names[:20]}"


@pytest.mark.parametrize(("name", "kind"), FAMILIES.items(), ids=FAMILIES.keys())
def test_vllm_metric_is_exposed(vllm_http, vllm_server, name, kind):
    families = _families(vllm_http)
    assert name in families, f"vLLM exposes {name}; /metrics has {sorted(n for n in families if n.startswith('vllm:'))}"
    family = families[name]
    assert family.type == kind, f"{name} is a {kind}, exposed as a {family.type}"
    served = {sample.labels.get("model_name") for sample in family.samples}
    assert served & set(vllm_server.models), (
        f"vLLM labels {name} with model_name, the served model name; got {served}, serving {vllm_server.models}"
    )


@pytest.mark.vllm_requires("completions")
def test_counters_move_after_a_completion(vllm_http, vllm_server):
    before = _families(vllm_http)
    response = vllm_http.post(
        "/v1/completions",
        json={
            "model": vllm_server.model,
            "prompt": "Hello, my name is",
            "max_tokens": 4,
            "temperature": 0,
            "ignore_eos": True,
        },
    )
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    usage, reason = body["usage"], body["choices"][0]["finish_reason"]
    expected = [
        ("vllm:prompt_tokens", {}, usage["prompt_tokens"]),
        ("vllm:generation_tokens", {}, usage["completion_tokens"]),
        ("vllm:request_success", {"finished_reason": reason}, 1),
    ]
    deadline = time.monotonic() + _SETTLE_SECONDS
    while True:
        after = _families(vllm_http)
        short = {
            f"{name}{labels or ''}": f"+{grown:g}, expected at least +{least}"
            for name, labels, least in expected
            if (grown := _total(after, name, **labels) - _total(before, name, **labels)) < least
        }
        if not short or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    fingerprint(f"counters short after one completion: {sorted(short)}")  # by how much depends on timing
    assert not short, (
        f"after one completion (usage {usage}, finish_reason {reason!r}) each counter grows by at "
        f"least that request's share within {_SETTLE_SECONDS:g}s: {short}"
    )
