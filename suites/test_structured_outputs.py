"""Structured outputs: every constraint vLLM accepts is enforced, streamed or not, and bad ones are 4xx.

`response_format` (`json_object`, `json_schema` with and without `strict`) and vLLM's
`structured_outputs` (`json`, `regex`, `choice`, `grammar` in GBNF and Lark) on chat and
completions: each output is checked by the suite itself (pytest_vllm.checks.constraints), the streamed
deltas joined first. A regex, choice or grammar constraint admits only outputs of a few tokens, so
one cut by max_tokens was not enforced; a JSON grammar leaves whitespace free and a model may spend
any budget on it, so a JSON output cut by max_tokens is asked for once more with a larger budget and
that whitespace forbidden, and is inconclusive if cut again. Invalid constraints must be 4xx.

Fail-open probes: a field the server answers 200 but does not enforce fails as "accepted but
ignored". Each probe biases (logit_bias +100, greedy) a token whose text no valid output holds, so
an unconstrained model of any kind writes it and an enforcing server must mask it.

OpenAI's `response_format` and vLLM's `structured_outputs` are separate capabilities: a server that
is not vLLM may enforce the first and not know the second.
"""

import pytest

from pytest_vllm.checks.constraints import (
    CONSTRAINTS,
    FOREIGN_CHARACTERS,
    REMOVED_FIELDS,
    finished,
    schema_violation,
)
from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.sse import join_choices, read_stream

TOKENS = 96
PROBE_TOKENS = 24
ROUTES = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
COMPACT = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
    "additionalProperties": False,
}


def ask_for(endpoint, words):
    """The request input asking, in words, for what the constraint allows."""
    if endpoint == "chat":
        return {"messages": [{"role": "user", "content": f"Reply with {words}, and nothing else."}]}
    return {"prompt": f"Question: reply with {words}.\nAnswer: "}


@pytest.fixture
def generate(vllm_http, vllm_server):
    """`generate(endpoint, fields, stream=False)`: (text, finish_reason) of a greedy answer."""

    def send(endpoint, fields, stream=False, max_tokens=TOKENS):
        body = {"model": vllm_server.model, "max_tokens": max_tokens, "temperature": 0, **fields, "stream": stream}
        if stream:
            with vllm_http.stream("POST", ROUTES[endpoint], json=body) as response:
                [choice] = join_choices(read_stream(response)).values()
        else:
            response = vllm_http.post(ROUTES[endpoint], json=body)
            answered_ok(response, limit=500)
            [choice] = response.json()["choices"]
        text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
        return text or "", choice["finish_reason"]

    return send


def assert_finished(name, text, finish_reason, max_tokens):
    """For a constraint with no free whitespace, that admits only outputs of a few tokens."""
    assert finish_reason != "length", (
        f"{name}: the constraint admits only outputs of a few tokens, yet the output was cut by "
        f"max_tokens={max_tokens} (finish_reason 'length'): {text[:300]!r}"
    )


def capability(name):
    """The capability a constraint or field needs: OpenAI's response_format, or vLLM's structured_outputs."""
    return "response_format" if name.startswith("response_format") else "structured_outputs"


def single_token(vllm_http, model, candidates):
    """The first candidate text that is exactly one token (no special tokens): (token id, text)."""
    for text in candidates:
        response = vllm_http.post("/tokenize", json={"model": model, "prompt": text, "add_special_tokens": False})
        answered_ok(response, "/tokenize")
        if len(response.json()["tokens"]) == 1:
            return response.json()["tokens"][0], text
    pytest.fail(f"none of {candidates!r} is a single token of this tokenizer, so the probe has no token to bias")


CASES = [
    pytest.param(
        name,
        endpoint,
        stream,
        id=f"{name}-{endpoint}{'-stream' if stream else ''}",
        marks=pytest.mark.vllm_requires(endpoint, capability(name)),
    )
    for name, constraint in CONSTRAINTS.items()
    for endpoint in constraint.endpoints
    for stream in (False, True)
]


@pytest.mark.parametrize(("name", "endpoint", "stream"), CASES)
def test_output_meets_its_constraint(generate, whitespace_bias, name, endpoint, stream):
    constraint = CONSTRAINTS[name]
    fields = {**ask_for(endpoint, constraint.describe), **constraint.fields}
    if constraint.bounded:  # a cut output is itself the constraint not enforced
        text, finish_reason = generate(endpoint, fields, stream)
        assert_finished(name, text, finish_reason, TOKENS)
    else:
        (text, _), _ = finished(
            lambda extra: generate(endpoint, {**fields, **extra}, stream),
            lambda answer: answer[0] if answer[1] == "length" else None,
            ("max_tokens", TOKENS),
            whitespace_bias,
        )
    why = constraint.violation(text)
    assert why is None, (
        f"{name} ({constraint.fields}) constrains the {'joined streamed ' if stream else ''}output, but {text!r} {why}"
    )


INVALID = {
    "json-schema-bad-type": {"structured_outputs": {"json": {"type": "objekt"}}},
    "response_format-bad-schema": {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}
    },
    "response_format-json_schema-without-schema": {"response_format": {"type": "json_schema"}},
    "regex-unclosed-class": {"structured_outputs": {"regex": "[a-"}},
    "grammar-unclosed-group": {"structured_outputs": {"grammar": "root ::= ("}},
    "choice-empty": {"structured_outputs": {"choice": []}},
    "two-structured_outputs": {"structured_outputs": {"regex": "[a-z]+", "choice": ["a", "b"]}},
    "response_format-and-structured_outputs": {
        "response_format": {"type": "json_object"},
        "structured_outputs": {"choice": ["a", "b"]},
    },
}


@pytest.mark.parametrize("endpoint", [pytest.param(e, marks=pytest.mark.vllm_requires(e)) for e in ROUTES])
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, marks=pytest.mark.vllm_requires(*{capability(field) for field in fields}))
        for case, fields in INVALID.items()
    ],
)
def test_invalid_constraint_is_rejected(vllm_http, vllm_server, endpoint, case):
    body = {"model": vllm_server.model, **ask_for(endpoint, "anything"), "max_tokens": 4, **INVALID[case]}
    response = vllm_http.post(ROUTES[endpoint], json=body)
    assert 400 <= response.status_code < 500, (
        f"{case}: a constraint that cannot be compiled or is ambiguous must be refused with a 4xx "
        f"(the constraint is validated before generating), got {response.status_code}: {response.text[:500]}"
    )
    error = response.json().get("error")
    assert isinstance(error, dict) and error.get("message"), (
        f"a 4xx carries OpenAI's error object {{'error': {{'message', ...}}}}: {response.text[:500]}"
    )


@pytest.mark.vllm_requires("structured_outputs", "tokenize")
@pytest.mark.parametrize("endpoint", [pytest.param(e, marks=pytest.mark.vllm_requires(e)) for e in ROUTES])
@pytest.mark.parametrize("field", REMOVED_FIELDS)
def test_removed_guided_field_is_rejected_or_enforced(generate, vllm_http, vllm_server, endpoint, field):
    key, value, violation = REMOVED_FIELDS[field]
    token, character = single_token(vllm_http, vllm_server.model, FOREIGN_CHARACTERS)
    base = {**ask_for(endpoint, "yes or no"), "logit_bias": {str(token): 100}}
    text, finish_reason = generate(endpoint, {**base, "structured_outputs": {key: value}}, max_tokens=PROBE_TOKENS)
    assert_finished(f"structured_outputs.{key} (the reference)", text, finish_reason, PROBE_TOKENS)
    assert violation(text) is None, (
        f"structured_outputs.{key}={value!r} with logit_bias +100 on {character!r}: the constraint must mask "
        f"the biased token, yet the output {text!r} {violation(text)}"
    )
    body = {"model": vllm_server.model, **base, field: value, "max_tokens": PROBE_TOKENS, "temperature": 0}
    response = vllm_http.post(ROUTES[endpoint], json=body)
    if 400 <= response.status_code < 500:
        return  # rejected, not silently ignored
    answered_ok(response, field, limit=500)
    [choice] = response.json()["choices"]
    text = (choice["message"]["content"] if endpoint == "chat" else choice["text"]) or ""
    why = violation(text)
    ignored = character in text or (why is not None and choice["finish_reason"] != "length")
    assert not ignored, (
        f"accepted but ignored: `{field}` (removed in vLLM 0.12, replaced by structured_outputs.{key}) was "
        f"answered 200 but not enforced: with logit_bias +100 on {character!r} the output {text!r} "
        f"{why or 'holds the biased token'}, while structured_outputs.{key} with the same value masks it. "
        f"A client upgrading from an older vLLM gets unconstrained output and no error; the server should "
        f"reject the field (4xx) or enforce it."
    )
    assert_finished(field, text, choice["finish_reason"], PROBE_TOKENS)


@pytest.mark.vllm_requires("structured_outputs", "tokenize")
@pytest.mark.parametrize("endpoint", [pytest.param(e, marks=pytest.mark.vllm_requires(e)) for e in ROUTES])
def test_disable_any_whitespace_is_enforced(generate, vllm_http, vllm_server, endpoint):
    token, character = single_token(vllm_http, vllm_server.model, (" ", "\t", "\n"))
    fields = {
        **ask_for(endpoint, 'the JSON object {"answer": "yes"} or {"answer": "no"}'),
        "structured_outputs": {"json": COMPACT, "disable_any_whitespace": True},
        "logit_bias": {str(token): 100},
    }
    text, finish_reason = generate(endpoint, fields, max_tokens=PROBE_TOKENS)
    assert not any(c.isspace() for c in text), (
        f"accepted but ignored: structured_outputs.disable_any_whitespace=true (vLLM's StructuredOutputsParams) "
        f"forbids whitespace in the JSON, and no string of this schema holds any, yet with logit_bias +100 on "
        f"{character!r} the output is {text[:200]!r}: the per-request flag is not applied"
    )
    assert_finished("structured_outputs.json with disable_any_whitespace", text, finish_reason, PROBE_TOKENS)
    why = schema_violation(COMPACT)(text)
    assert why is None, f"structured_outputs.json={COMPACT} constrains the output, but {text!r} {why}"
