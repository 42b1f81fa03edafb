"""POST /v1/responses (OpenAI's Responses API): create, instructions, multi-turn input, cancel,
`text.format` structured output, function tools, streaming events, stored responses, errors.

A response is validated against OpenAI's own `Response` schema and each streamed event against
its member of `ResponseStreamEvent`, once each (the other checks judge behaviour). A stream starts
with `response.created`, ends with `response.completed` (`response.incomplete` where the budget cut
it), numbers its events 0, 1, 2, ... and its
text deltas join to the final text. Retrieving a stored response, and continuing one with
`previous_response_id`, need the server to store responses (vLLM:
VLLM_ENABLE_RESPONSES_API_STORE=1; the embedded default sets it); a server that answers `store`
with a 404 on retrieval lacks `responses_store`. With `tool_choice: "required"` the output holds a
`function_call` of a listed tool, its arguments valid against the tool's strict schema; its
`function_call_output` turn is answered. A Response's `status` is tied to what happened: 'incomplete'
(reason max_output_tokens) where the budget cut an answer known to be longer, 'completed' where the
answer ended before its budget.
"""

import pytest

from pytest_vllm.checks.constraints import finished, schema_violation
from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.openapi import validate, validate_event
from pytest_vllm.checks.sse import read_events
from pytest_vllm.outcomes import inconclusive
from pytest_vllm.verdicts import fingerprint

pytestmark = pytest.mark.vllm_requires("responses")

TOKENS = 16
ASK = "Name three colours."
ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather in a city.",
    "strict": True,
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
ASK_TOOL = "What is the weather in Paris? Use the tools."
TOOL_TOKENS = 64


@pytest.fixture
def create(vllm_http, vllm_server):
    """`create(**fields)`: a /v1/responses answer (200 asserted), greedy, `TOKENS` long."""

    def send(**fields):
        body = {"model": vllm_server.model, "input": ASK, "max_output_tokens": TOKENS, "temperature": 0, **fields}
        response = vllm_http.post("/v1/responses", json=body)
        answered_ok(response, f"{fields}", limit=400)
        return response.json()

    return send


def output_text(body):
    """The text of the response's output messages, joined (what the SDK's `output_text` gives)."""
    return "".join(
        part.get("text", "")
        for item in body["output"]
        if item.get("type") == "message"
        for part in item.get("content", [])
        if part.get("type") == "output_text"
    )


def test_response_matches_openai_schema(create):
    validate(create(instructions="You answer briefly."), "Response")


def test_create_answers_with_a_completed_message(create):
    body = create()
    assert body["object"] == "response" and body["status"] in ("completed", "incomplete"), (
        f"a response object, completed (or incomplete when max_output_tokens cut it): {body['object']!r}, "
        f"{body['status']!r}"
    )
    assert output_text(body), f"the output holds an assistant message with output_text: {body['output']}"
    usage = body["usage"]
    assert (
        0 < usage["output_tokens"] <= TOKENS and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    ), f"usage counts at most max_output_tokens={TOKENS} output tokens, total = input + output: {usage}"
    if body["status"] == "incomplete":
        assert body["incomplete_details"]["reason"] == "max_output_tokens", body["incomplete_details"]


CUT = 2


def test_a_response_cut_by_max_output_tokens_is_incomplete(create):
    """The witness: the greedy answer at a larger budget is longer than `CUT` tokens, so at max_output_tokens
    `CUT` the same answer is cut: status 'incomplete', for reason max_output_tokens."""
    full = create()
    if full["usage"]["output_tokens"] <= CUT:
        inconclusive(f"the greedy answer is {full['usage']['output_tokens']} tokens, too short to be cut: {full}")
    cut = create(max_output_tokens=CUT)
    state = (cut["status"], (cut.get("incomplete_details") or {}).get("reason"), cut["usage"]["output_tokens"])
    fingerprint(f"a cut answer: status {state[0]!r}, incomplete_details.reason {state[1]!r}")
    assert state == ("incomplete", "max_output_tokens", CUT), (
        f"the greedy answer runs to {full['usage']['output_tokens']} tokens, so max_output_tokens={CUT} cuts it: "
        f"status 'incomplete', incomplete_details.reason 'max_output_tokens', {CUT} output tokens; got status "
        f"{cut['status']!r}, incomplete_details {cut.get('incomplete_details')!r}, usage {cut['usage']}"
    )


def test_a_response_that_finished_is_completed(create):
    """The witness: an answer that ended before its budget (at the first of two budgets where one does)
    finished by itself: status 'completed', no incomplete_details."""
    for budget in (TOKENS, TOOL_TOKENS * 4):
        body = create(max_output_tokens=budget)
        if body["usage"]["output_tokens"] < budget:
            break
    else:
        inconclusive(f"the greedy answer runs to every budget, up to {budget} tokens: nothing finished by itself")
    assert (body["status"], body.get("incomplete_details")) == ("completed", None), (
        f"the answer ended at {body['usage']['output_tokens']} of max_output_tokens={budget} tokens, by itself: "
        f"status 'completed' and no incomplete_details; got {body['status']!r}, {body.get('incomplete_details')!r}"
    )


def test_instructions_and_earlier_turns_reach_the_model(create):
    turns = [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": ASK},
    ]
    counts = {
        "input": create(max_output_tokens=1)["usage"]["input_tokens"],
        "instructions": create(max_output_tokens=1, instructions="You answer briefly.")["usage"]["input_tokens"],
        "turns": create(max_output_tokens=1, input=turns)["usage"]["input_tokens"],
    }
    assert counts["input"] < counts["instructions"] and counts["input"] < counts["turns"], (
        f"instructions and earlier turns are part of the prompt, so each adds input tokens: {counts}"
    )


def test_text_format_json_schema_is_enforced(create, whitespace_bias):
    fmt = {"format": {"type": "json_schema", "name": "answer", "schema": ANSWER, "strict": True}}
    ask = 'Reply with the JSON object {"answer": "yes"} or {"answer": "no"}.'
    body, _ = finished(
        lambda extra: create(**{"input": ask, "max_output_tokens": 64, "text": fmt, **extra}),
        cut_output,
        ("max_output_tokens", 64),
        whitespace_bias,
    )
    text = output_text(body)
    why = schema_violation(ANSWER)(text)
    assert body["status"] == "completed" and why is None, (
        f"text.format json_schema constrains the output: status {body['status']!r}, {text!r} {why or ''}"
    )


def _events(vllm_http, server, **fields):
    body = {
        "model": server.model,
        "input": ASK,
        "max_output_tokens": TOKENS,
        "temperature": 0,
        "stream": True,
        **fields,
    }
    with vllm_http.stream("POST", "/v1/responses", json=body) as response:
        return read_events(response)


def test_stream_events_match_openai_schemas(vllm_http, vllm_server):
    for event in _events(vllm_http, vllm_server):
        validate_event(event, "ResponseStreamEvent")


def test_stream_events_are_ordered_and_join_to_the_text(vllm_http, vllm_server, create):
    events = _events(vllm_http, vllm_server)
    kinds = [event["type"] for event in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), (
        f"a stream starts with response.created and ends with response.completed (or .incomplete): {kinds}"
    )
    numbers = [event["sequence_number"] for event in events]
    assert numbers == list(range(len(events))), f"sequence_number counts the events from 0: {numbers}"
    deltas = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    done = [event["text"] for event in events if event["type"] == "response.output_text.done"]
    assert done == [deltas] and output_text(final) == deltas == output_text(create()), (
        f"the text deltas join to response.output_text.done's text, to the completed response's and to the "
        f"non-streamed greedy answer: {deltas!r}, {done}, {output_text(final)!r}"
    )


def test_a_cut_stream_ends_with_response_incomplete(vllm_http, vllm_server, create):
    """The witness as for the non-streamed answer: max_output_tokens `CUT` cuts an answer known to be longer,
    and OpenAI's stream then ends with response.incomplete, its response's status 'incomplete'."""
    full = create()
    if full["usage"]["output_tokens"] <= CUT:
        inconclusive(f"the greedy answer is {full['usage']['output_tokens']} tokens, too short to be cut: {full}")
    last = _events(vllm_http, vllm_server, max_output_tokens=CUT)[-1]
    ending = (last["type"], (last.get("response") or {}).get("status"))
    fingerprint(f"a cut stream ends with {ending}")
    assert ending == ("response.incomplete", "incomplete"), (
        f"the greedy answer runs to {full['usage']['output_tokens']} tokens, so max_output_tokens={CUT} cuts it and "
        f"the stream ends with response.incomplete, status 'incomplete' (OpenAI): it ended with {ending}"
    )


@pytest.mark.vllm_requires("responses_store")
def test_stored_response_is_retrieved(vllm_http, create):
    body = create(store=True)
    again = vllm_http.get(f"/v1/responses/{body['id']}")
    answered_ok(again, f"GET /v1/responses/{body['id']}")
    assert (again.json()["id"], output_text(again.json())) == (body["id"], output_text(body)), (
        f"the stored response comes back as it was created: {again.text[:300]}"
    )


@pytest.mark.vllm_requires("responses_store")
def test_previous_response_id_continues_the_conversation(create):
    first = create(store=True)
    follow = create(previous_response_id=first["id"], input="And three more?", max_output_tokens=1)
    alone = create(input="And three more?", max_output_tokens=1)
    assert follow["usage"]["input_tokens"] > alone["usage"]["input_tokens"] + first["usage"]["output_tokens"], (
        f"previous_response_id puts the earlier turn (its input and output) before the new input: "
        f"{follow['usage']['input_tokens']} input tokens with it, {alone['usage']['input_tokens']} without"
    )


# No case expects an upstream 404 (say an unknown previous_response_id): through a gateway such as
# LiteLLM's, a 404 from the server behind it puts that server into a cooldown that other checks would see.
@pytest.mark.parametrize(
    ("fields", "status"),
    [
        pytest.param({"max_output_tokens": -1}, (400,), id="max_output_tokens-negative"),
        pytest.param({"input": 42}, (400,), id="input-a-number"),
    ],
)
def test_invalid_request_is_4xx_with_an_error_object(vllm_http, vllm_server, fields, status):
    body = {"model": vllm_server.model, "input": ASK, "max_output_tokens": 4, **fields}
    response = vllm_http.post("/v1/responses", json=body)
    assert response.status_code in status, (
        f"{fields} is an invalid request: {' or '.join(map(str, status))}, "
        f"got {response.status_code}: {response.text[:300]}"
    )
    error = response.json().get("error")
    assert isinstance(error, dict) and error.get("message"), (
        f"an OpenAI error object with a message: {response.text[:300]}"
    )


@pytest.mark.vllm_requires("responses_store")
def test_cancelling_a_finished_response_is_refused(vllm_http, create):
    """Only a background response still running can be cancelled (OpenAI); a finished one stays as it was."""
    body = create(store=True)
    response = vllm_http.post(f"/v1/responses/{body['id']}/cancel")
    assert 400 <= response.status_code < 500 and isinstance(response.json().get("error"), dict), (
        f"cancelling a response that has finished is refused with a 4xx error: "
        f"{response.status_code} {response.text[:300]}"
    )
    again = vllm_http.get(f"/v1/responses/{body['id']}")
    assert again.status_code == 200 and again.json()["status"] == body["status"], (
        f"the refused cancel leaves the response {body['status']!r}: {again.status_code} {again.text[:300]}"
    )


def cut_output(body):
    """The output so far of a Response cut by max_output_tokens (None if it was not)."""
    cut = body["status"] == "incomplete" and (body.get("incomplete_details") or {}).get("reason") == "max_output_tokens"
    return str(body["output"]) if cut else None


@pytest.mark.vllm_requires("tools")
def test_required_tool_choice_calls_a_listed_function(create, whitespace_bias):
    fields = {"input": ASK_TOOL, "tools": [WEATHER], "tool_choice": "required", "max_output_tokens": TOOL_TOKENS}
    body, _ = finished(
        lambda extra: create(**{**fields, **extra}), cut_output, ("max_output_tokens", TOOL_TOKENS), whitespace_bias
    )
    calls = [item for item in body["output"] if item.get("type") == "function_call"]
    assert calls, f"tool_choice 'required' makes the output hold a function_call item: {body['output']}"
    for call in calls:
        assert call["name"] == WEATHER["name"] and isinstance(call.get("call_id"), str) and call["call_id"], (
            f"a function_call names a listed tool and carries a call_id: {call}"
        )
        problem = schema_violation(WEATHER["parameters"])(call["arguments"])
        assert problem is None, (
            f"the call's arguments follow the strict tool's schema: {problem} ({call['arguments']!r})"
        )


@pytest.mark.vllm_requires("tools")
def test_function_call_output_turn_is_answered(create):
    turns = [
        {"role": "user", "content": ASK_TOOL},
        {
            "type": "function_call",
            "call_id": "call_weather_1",
            "name": WEATHER["name"],
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_weather_1", "output": "Sunny, 21 celsius."},
    ]
    with_result = create(input=turns, tools=[WEATHER], max_output_tokens=1)
    without = create(input=turns[:1], tools=[WEATHER], max_output_tokens=1)
    assert with_result["usage"]["input_tokens"] > without["usage"]["input_tokens"], (
        f"the call and its output reach the model as input: {with_result['usage']['input_tokens']} input tokens "
        f"with them, {without['usage']['input_tokens']} without"
    )
