"""Invalid requests: rejected with a 4xx in OpenAI's error shape, never a 5xx, server still healthy.

One table of requests that OpenAI's spec or vLLM's own validation (SamplingParams, the
request models) call invalid. Each must be answered 400 (404 for an unknown model), with
`param` naming the offending field where OpenAI would set one, and the server still serves
(vLLM's /health, else GET /v1/models). Cases of vLLM's own fields and limits need the
capability they use. Unknown routes and wrong methods answer 404 / 405.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_vllm.verdicts import fingerprint

ROUTES = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
MESSAGES = [{"role": "user", "content": "Hello"}]
TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@dataclass(frozen=True)
class Invalid:
    """An invalid request: `fields` added to a small valid one (a value may be a function of
    the server's limits), or a raw `body`; the status and the `param` values OpenAI would use."""

    route: str
    fields: dict[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    status: int = 400
    body: bytes | None = None
    content_type: str = "application/json"


def invalid(
    case_id: str,
    route: str,
    fields: dict | None = None,
    params: tuple[str, ...] = (),
    *,
    needs: tuple[str, ...] = (),
    **kw,
):
    return pytest.param(
        Invalid(route, fields or {}, params, **kw),
        id=f"{route}-{case_id}",
        marks=pytest.mark.vllm_requires(route, *needs),
    )


def vllm_field(case_id: str, route: str, fields: dict, params: tuple[str, ...], needs=("vllm_sampling",)):
    """A case of vLLM's own request fields: only a server that honours them can be held to it."""
    return invalid(case_id, route, fields, params, needs=needs)


def over_long_prompt(limits) -> str:
    return limits().long_text


def over_max_model_len(limits) -> int:
    return limits().max_model_len + 1


LIMITS = ("tokenize", "model_extras")  # max_model_len from /v1/models, the long prompt's length from /tokenize


CASES = [
    invalid("temperature-below-0", "chat", {"temperature": -0.5}, ("temperature",)),
    invalid("temperature-above-2", "chat", {"temperature": 2.5}, ("temperature",)),
    invalid("top_p-above-1", "chat", {"top_p": 1.5}, ("top_p",)),
    invalid("top_p-below-0", "chat", {"top_p": -0.5}, ("top_p",)),
    vllm_field("top_k-below-minus-1", "chat", {"top_k": -2}, ("top_k",)),
    vllm_field("min_p-above-1", "chat", {"min_p": 1.5}, ("min_p",)),
    invalid("presence_penalty-above-2", "chat", {"presence_penalty": 3}, ("presence_penalty",)),
    invalid("frequency_penalty-below-minus-2", "chat", {"frequency_penalty": -3}, ("frequency_penalty",)),
    vllm_field("repetition_penalty-zero", "chat", {"repetition_penalty": 0}, ("repetition_penalty",)),
    invalid("max_tokens-negative", "chat", {"max_tokens": -1}, ("max_tokens",)),
    invalid("max_completion_tokens-negative", "chat", {"max_completion_tokens": -1}, ("max_completion_tokens",)),
    invalid("n-zero", "chat", {"n": 0}, ("n",)),
    invalid("n-2-with-temperature-0", "chat", {"n": 2, "temperature": 0}, ("n", "temperature")),
    invalid("temperature-a-string", "chat", {"temperature": "hot"}, ("temperature",)),
    invalid("max_tokens-a-string", "chat", {"max_tokens": "four"}, ("max_tokens",)),
    invalid("messages-a-string", "chat", {"messages": "Hello"}, ("messages",)),
    # Found by test_fuzz: vLLM 0.32 answers a list here with a 500 ("'list' object has no attribute 'get'").
    vllm_field(
        "structured_outputs-a-list",
        "chat",
        {"structured_outputs": [1]},
        ("structured_outputs",),
        needs=("structured_outputs",),
    ),
    invalid("messages-empty", "chat", {"messages": []}, ("messages",)),
    invalid("model-unknown", "chat", {"model": "pytest-vllm-no-such-model"}, ("model",), status=404),
    invalid(
        "prompt-over-max_model_len",
        "chat",
        {"messages": [{"role": "user", "content": over_long_prompt}]},
        ("messages",),
        needs=LIMITS,
    ),
    invalid("max_tokens-over-max_model_len", "chat", {"max_tokens": over_max_model_len}, ("max_tokens",), needs=LIMITS),
    invalid("top_logprobs-without-logprobs", "chat", {"top_logprobs": 2}, ("top_logprobs", "logprobs")),
    invalid("top_logprobs-above-20", "chat", {"logprobs": True, "top_logprobs": 21}, ("top_logprobs",)),
    invalid("top_logprobs-negative", "chat", {"logprobs": True, "top_logprobs": -1}, ("top_logprobs",)),
    invalid(
        "stream_options-without-stream",
        "chat",
        {"stream_options": {"include_usage": True}},
        ("stream_options", "stream"),
    ),
    invalid("stop-5-strings", "chat", {"stop": ["a", "b", "c", "d", "e"]}, ("stop",)),
    vllm_field("min_tokens-above-max_tokens", "chat", {"min_tokens": 8, "max_tokens": 4}, ("min_tokens", "max_tokens")),
    invalid("logit_bias-out-of-vocab", "chat", {"logit_bias": {"999999999": 5}}, ("logit_bias",)),
    invalid("response_format-unknown-type", "chat", {"response_format": {"type": "yaml"}}, ("response_format",)),
    invalid("tools-empty", "chat", {"tools": []}, ("tools",)),
    invalid("tool_choice-without-tools", "chat", {"tool_choice": "required"}, ("tool_choice", "tools")),
    invalid(
        "tool_choice-names-absent-tool",
        "chat",
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "absent"}}},
        ("tool_choice",),
    ),
    invalid("body-not-json", "chat", body=b'{"model": "m", "messages": ['),
    invalid("body-a-json-array", "chat", body=b"[1, 2]"),
    invalid(
        "content-type-text-plain", "chat", body=json.dumps({"messages": MESSAGES}).encode(), content_type="text/plain"
    ),
    invalid("model-unknown", "completions", {"model": "pytest-vllm-no-such-model"}, ("model",), status=404),
    invalid("prompt-over-max_model_len", "completions", {"prompt": over_long_prompt}, ("prompt",), needs=LIMITS),
    invalid("logprobs-far-above-max", "completions", {"logprobs": 10**6}, ("logprobs",)),
    vllm_field(
        "prompt_logprobs-with-stream",
        "completions",
        {"prompt_logprobs": 1, "stream": True},
        ("prompt_logprobs", "stream"),
    ),
]


@pytest.fixture(scope="module")
def limits(vllm_http, vllm_server):
    """`limits()`: max_model_len (from /v1/models) and a text longer than it in tokens (counted by
    /tokenize), asked for by the cases that need them only."""
    found = []

    def learn():
        if not found:
            [entry] = [e for e in vllm_http.get("/v1/models").json()["data"] if e["id"] == vllm_server.model]
            max_model_len = entry["max_model_len"]
            long_text = "hello " * (max_model_len + 1)
            tokens = vllm_http.post("/tokenize", json={"model": vllm_server.model, "prompt": long_text}).json()
            assert tokens["count"] > max_model_len, "the over-long prompt must exceed max_model_len in tokens"
            found.append(SimpleNamespace(max_model_len=max_model_len, long_text=long_text))
        return found[0]

    return learn


def _resolve(value: Any, limits) -> Any:
    if callable(value):
        return value(limits)
    if isinstance(value, list):
        return [_resolve(item, limits) for item in value]
    if isinstance(value, dict):
        return {key: _resolve(item, limits) for key, item in value.items()}
    return value


def _send(http, server, limits, case: Invalid):
    if case.body is None:
        base = {"model": server.model, "max_tokens": 4}
        base.update({"messages": MESSAGES} if case.route == "chat" else {"prompt": "Hello"})
        content = json.dumps({**base, **_resolve(case.fields, limits)}).encode()
    else:
        content = case.body
    return http.post(ROUTES[case.route], content=content, headers={"Content-Type": case.content_type})


def _names_a_field(param: Any, fields: tuple[str, ...]) -> bool:
    """`param` names one of `fields`, also as vLLM's pydantic location (`body.stop`, `body.x.type`)."""
    if not isinstance(param, str):
        return False
    name = param.removeprefix("body.")
    return any(name == f or name.startswith(f + ".") for f in fields)


@pytest.mark.parametrize("case", CASES)
def test_invalid_request_is_rejected(vllm, vllm_http, vllm_server, limits, case: Invalid):
    response = _send(vllm_http, vllm_server, limits, case)
    sent = response.request.content.decode()[:300]
    route, health = vllm.liveness(vllm_server)
    fingerprint(f"answered {response.status_code}, {route} {health}")
    assert response.status_code < 500, (
        f"an invalid request is the client's error: a 4xx, never {response.status_code}; "
        f"sent {sent}; got {response.text[:400]}"
    )
    assert response.status_code == case.status, (
        f"expected {case.status} for this invalid request, got {response.status_code}; "
        f"sent {sent}; got {response.text[:400]}"
    )
    assert health == 200, f"GET {route} answered {health} after the invalid request {sent}"


@pytest.mark.parametrize("case", [case for case in CASES if case.values[0].params])
def test_rejection_names_the_offending_field(vllm_http, vllm_server, limits, case: Invalid):
    response = _send(vllm_http, vllm_server, limits, case)
    fingerprint(f"answered {response.status_code}")
    assert 400 <= response.status_code < 500, f"expected a 4xx, got {response.status_code}: {response.text[:300]}"
    param = response.json()["error"].get("param")
    fingerprint(f"param={param!r}")
    assert _names_a_field(param, case.params), (
        f"OpenAI's error sets `param` to the offending request field ({' or '.join(case.params)}); "
        f"the server sent param={param!r} with message {response.json()['error'].get('message', '')[:300]!r}"
    )


@pytest.mark.parametrize("case", CASES)
def test_rejection_has_openai_error_envelope(vllm_http, vllm_server, limits, case: Invalid):
    """OpenAI's envelope: {"error": {"message", "type", "param", "code"}}. (The field types are
    checked once against the ErrorResponse schema in test_schema.py.)"""
    response = _send(vllm_http, vllm_server, limits, case)
    fingerprint(f"answered {response.status_code}")
    assert 400 <= response.status_code < 500, f"expected a 4xx, got {response.status_code}: {response.text[:300]}"
    error = response.json().get("error")
    fingerprint(f"error object {sorted(error) if isinstance(error, dict) else type(error).__name__}")
    assert isinstance(error, dict), f"an OpenAI error body is {{'error': {{...}}}}, got {response.text[:300]}"
    missing = {"message", "type", "param", "code"} - error.keys()
    assert not missing, f"OpenAI's error object has message, type, param and code; missing {missing}: {error}"
    assert isinstance(error["message"], str) and error["message"].strip(), f"the message says what is wrong: {error}"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param(method, path, status, id=f"{method}-{path}", marks=pytest.mark.vllm_requires(*needs))
        for method, path, status, needs in [
            ("GET", "/v1/no-such-route", 404, ()),
            ("POST", "/v1/no-such-route", 404, ()),
            ("GET", "/v1/chat/completions", 405, ("chat",)),
            ("GET", "/v1/completions", 405, ("completions",)),
            ("DELETE", "/v1/models", 405, ()),
            ("POST", "/health", 405, ("health",)),
        ]
    ],
)
def test_unknown_route_or_method(vllm_http, method, path, status):
    response = vllm_http.request(method, path)
    assert response.status_code == status, (
        f"{method} {path}: an unknown route is 404, a known route with the wrong method 405; "
        f"got {response.status_code}: {response.text[:300]}"
    )
