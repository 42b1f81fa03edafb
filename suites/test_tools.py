"""Tool calling on /v1/chat/completions: tool_choice, call shapes, finish_reason, streaming, tool turns.

`tool_choice` `none` (no call), `required` (at least one; one with `parallel_tool_calls: false`),
a named function (that function), `auto` (whatever comes back is well formed; what the model chose
is recorded, never judged). Every call has a unique id, type `function`, a name from `tools` and
`arguments` a JSON object valid against the tool's schema (the tools are `strict`, so vLLM must
enforce it). finish_reason is `tool_calls` for auto/required calls, `stop` for a named call (OpenAI
and vLLM), `length` when max_tokens cut the call. Streamed calls start with id, type, index and
name, indices run 0..n-1 and the argument fragments join into the non-streamed arguments. A tool
result turn is answered. A named tool that is not in `tools`, and `tools: []`, are 4xx.
"""

import json

import pytest

from pytest_vllm.checks.constraints import call_violations, finished, tool_call_deltas
from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.sse import join_choices, read_stream
from pytest_vllm.outcomes import inconclusive

pytestmark = pytest.mark.vllm_requires("chat", "tools")

TOKENS = 128
CITY = {"type": "string", "enum": ["Paris", "Rome", "Tokyo"]}


def function_tool(name, description, properties):
    parameters = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters, "strict": True},
    }


TOOLS = [
    function_tool(
        "get_weather",
        "Get the weather in a city.",
        {"city": CITY, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    ),
    function_tool("get_time", "Get the local time in a city.", {"city": CITY}),
]
ASK = [{"role": "user", "content": "What is the weather in Paris, in celsius? Use the tools."}]
NAMED = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture
def chat(vllm_http, vllm_server):
    """`chat(stream=False, **fields)`: the JSON body (status 200 asserted) or the stream's chunks."""

    def send(stream=False, **fields):
        body = {
            "model": vllm_server.model,
            "messages": ASK,
            "tools": TOOLS,
            "max_tokens": TOKENS,
            "temperature": 0,
            **fields,
            "stream": stream,
        }
        if stream:
            with vllm_http.stream("POST", "/v1/chat/completions", json=body) as response:
                return read_stream(response)
        response = vllm_http.post("/v1/chat/completions", json=body)
        answered_ok(response, limit=500)
        return response.json()

    return send


def calls_of(body):
    [choice] = body["choices"]
    return choice["message"].get("tool_calls") or [], choice["finish_reason"]


def assert_not_ignored(what, body):
    """A forced call answered as plain text, not as a call (perhaps cut short): the tool_choice was ignored."""
    calls, _ = calls_of(body)
    content = (body["choices"][0]["message"].get("content") or "").lstrip()
    assert calls or not content or content.startswith(("[", "{")), (
        f"{what} answered with no tool call, only text: {content[:200]!r}"
    )


@pytest.fixture
def forced(chat, whitespace_bias):
    """`forced(**fields)`: (body, the fields added) of an answer that finished, retried once if max_tokens
    cut it (`finished`): a forced call cut short cannot be judged, it is not a call ignored."""

    def send(**fields):
        return finished(
            lambda extra: chat(**{**fields, **extra}),
            lambda body: (
                str(body["choices"][0]["message"]) if body["choices"][0]["finish_reason"] == "length" else None
            ),
            ("max_tokens", fields.get("max_tokens", TOKENS)),
            whitespace_bias,
        )

    return send


def assert_well_formed(what, calls):
    problems = call_violations(calls, TOOLS)
    assert not problems, f"{what}: malformed tool calls (OpenAI's tool_calls with strict tools):\n" + "\n".join(
        problems
    )


def test_none_makes_no_call(chat):
    """The witness: the same request with tool_choice 'auto' calls a tool (else 'none' cannot be told apart)."""
    if not calls_of(chat(tool_choice="auto"))[0]:
        inconclusive("with tool_choice 'auto' the model calls no tool, so 'none' changes nothing to see")
    calls, finish_reason = calls_of(chat(tool_choice="none"))
    assert not calls and finish_reason in ("stop", "length"), (
        f"tool_choice 'none' means the model calls no tool (OpenAI), so no tool_calls and finish_reason "
        f"'stop' or 'length': got {finish_reason!r} with {calls}"
    )


@pytest.mark.parametrize("parallel", [None, False], ids=["parallel-default", "parallel_tool_calls=false"])
def test_required_calls_a_tool(forced, parallel):
    fields = {"tool_choice": "required"} | ({} if parallel is None else {"parallel_tool_calls": parallel})
    body, _ = forced(**fields)
    assert_not_ignored(f"tool_choice 'required' {fields}", body)
    calls, finish_reason = calls_of(body)
    assert calls and finish_reason == "tool_calls", (
        f"tool_choice 'required' makes the model call one or more tools, with finish_reason 'tool_calls' "
        f"(OpenAI; vLLM's docs): got {finish_reason!r} with {body['choices'][0]['message']}"
    )
    assert_well_formed("tool_choice 'required'", calls)
    if parallel is False:
        assert len(calls) == 1, f"parallel_tool_calls=false allows at most one call per turn (OpenAI): {calls}"


def test_named_tool_choice_calls_that_function(forced):
    body, _ = forced(tool_choice=NAMED)
    assert_not_ignored(f"tool_choice {NAMED}", body)
    calls, finish_reason = calls_of(body)
    names = [call["function"]["name"] for call in calls]
    assert names and set(names) == {"get_time"} and finish_reason == "stop", (
        f"tool_choice {NAMED} forces a call of get_time (OpenAI), and a forced function ends with "
        f"finish_reason 'stop' (OpenAI and vLLM): got {finish_reason!r} with {body['choices'][0]['message']}"
    )
    assert_well_formed("a named tool_choice", calls)


def test_auto_answer_is_well_formed(chat, record_property):
    body = chat(tool_choice="auto")
    calls, finish_reason = calls_of(body)
    record_property("auto_chose", f"{len(calls)} tool call(s), finish_reason {finish_reason}")
    assert_well_formed(f"tool_choice 'auto' (the model made {len(calls)} call(s))", calls)
    expected = ("tool_calls",) if calls else ("stop", "length")
    assert finish_reason in expected, (
        f"tool_choice 'auto': the model made {len(calls)} call(s), so finish_reason must be one of {expected} "
        f"(OpenAI: 'tool_calls' if the model called a tool): got {finish_reason!r}"
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("choice", ["required", NAMED], ids=["required", "named"])
def test_call_cut_by_max_tokens_finishes_with_length(chat, choice, stream):
    answer = chat(tool_choice=choice, max_tokens=3, stream=stream)
    [joined] = join_choices(answer).values() if stream else answer["choices"]
    assert joined["finish_reason"] == "length", (
        f"tool_choice {choice!r} with max_tokens=3: no call of these tools fits in 3 tokens, so max_tokens cut "
        f"it and finish_reason must be 'length', not {joined['finish_reason']!r} (a truncated call is not a "
        f"tool call; OpenAI: 'length' if the maximum number of tokens was reached)"
    )


@pytest.mark.parametrize("choice", ["required", NAMED], ids=["required", "named"])
def test_streamed_calls_join_to_the_non_streamed_calls(chat, forced, choice):
    body, extra = forced(tool_choice=choice)
    chunks = chat(tool_choice=choice, stream=True, **extra)
    by_index = tool_call_deltas(chunks)
    assert sorted(by_index) == list(range(len(by_index))), (
        f"streamed tool calls are numbered by index 0, 1, ... without gaps: indices {sorted(by_index)}"
    )
    streamed = []
    for index, deltas in sorted(by_index.items()):
        first = deltas[0]
        assert first.get("id") and first.get("type") == "function" and (first.get("function") or {}).get("name"), (
            f"the first delta of streamed call {index} carries its id, type 'function', index and function.name "
            f"(OpenAI's ChatCompletionMessageToolCallChunk as clients accumulate it): {first}"
        )
        later = [delta for delta in deltas[1:] if delta.get("id") or (delta.get("function") or {}).get("name")]
        assert not later, (
            f"only the first delta of call {index} carries its id and function.name (clients concatenate the "
            f"string fields of later deltas, so a repeat corrupts them): {later}"
        )
        arguments = "".join((delta.get("function") or {}).get("arguments") or "" for delta in deltas)
        streamed.append(
            {
                "id": first["id"],
                "type": "function",
                "function": {"name": first["function"]["name"], "arguments": arguments},
            }
        )
    assert_well_formed(f"streamed tool_choice {choice!r}", streamed)
    calls, finish_reason = calls_of(body)
    as_values = [(call["function"]["name"], json.loads(call["function"]["arguments"])) for call in calls]
    streamed_values = [(call["function"]["name"], json.loads(call["function"]["arguments"])) for call in streamed]
    assert streamed_values == as_values, (
        f"greedy, the same request streamed must call the same functions with the same arguments (the joined "
        f"fragments): streamed {streamed_values} != non-streamed {as_values}"
    )
    [joined] = join_choices(chunks).values()
    assert joined["finish_reason"] == finish_reason, (
        f"the stream ends with the non-streamed finish_reason {finish_reason!r}, got {joined['finish_reason']!r}"
    )


TOOL_TURN = [
    *ASK,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_weather_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_weather_1", "content": '{"temperature": 21, "sky": "clear"}'},
]


@pytest.mark.parametrize("choice", ["none", "auto"])
def test_tool_result_turn_is_answered(chat, choice):
    body = chat(messages=TOOL_TURN, tool_choice=choice, max_tokens=32)
    [answer] = body["choices"]
    message = answer["message"]
    assert message["role"] == "assistant" and (isinstance(message.get("content"), str) or message.get("tool_calls")), (
        f"after an assistant tool call and a `role: tool` result with its tool_call_id, the next turn is an "
        f"assistant message (OpenAI's multi-turn tool use): {answer}"
    )
    assert_well_formed(f"the answer to a tool result (tool_choice {choice!r})", message.get("tool_calls") or [])


INVALID = {
    "named-tool-not-in-tools": {"tool_choice": {"type": "function", "function": {"name": "absent_tool"}}},
    "empty-tools": {"tools": [], "tool_choice": "auto"},
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_tool_request_is_rejected(vllm_http, vllm_server, case):
    body = {"model": vllm_server.model, "messages": ASK, "tools": TOOLS, "max_tokens": 4, **INVALID[case]}
    response = vllm_http.post("/v1/chat/completions", json=body)
    assert 400 <= response.status_code < 500, (
        f"{case}: a tool_choice naming no tool of `tools`, or an empty `tools` list, is an invalid request "
        f"(OpenAI: tools 'a list of tools the model may call'; vLLM validates tool_choice against it), "
        f"expected 4xx, got {response.status_code}: {response.text[:500]}"
    )
