"""Response shapes against OpenAI's own OpenAPI document, one check per kind of response.

Every variant a suite sends (plain, logprobs, n > 1, echo, several prompts, streamed with and
without usage, errors) is answered and validated whole: every field of the body, every chunk
of a stream. A missing, mistyped or misnamed OpenAI field fails here, once, with its JSON
pointer, so the behaviour suites can report behaviour. vLLM's extra fields are allowed.
"""

import pytest

from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.openapi import mismatch, problems, validate
from pytest_vllm.checks.sse import read_stream

PROMPT = "The capital of France is"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
COMMON = {"max_tokens": 5, "temperature": 0}


def case(id, capability, path, body, schema, stream=False):
    return pytest.param(
        path,
        {**COMMON, **body, "stream": stream},
        schema,
        stream,
        id=id,
        marks=pytest.mark.vllm_requires(*capability.split("+")),
    )


CASES = [
    case("completion", "completions", "/v1/completions", {"prompt": PROMPT}, "CreateCompletionResponse"),
    case(
        "completion-logprobs",
        "completions+logprobs",
        "/v1/completions",
        {"prompt": PROMPT, "logprobs": 2},
        "CreateCompletionResponse",
    ),
    case(
        "completion-echo",
        "completions",
        "/v1/completions",
        {"prompt": PROMPT, "echo": True},
        "CreateCompletionResponse",
    ),
    case(
        "completion-two-prompts",
        "completions",
        "/v1/completions",
        {"prompt": [PROMPT, "Once upon"]},
        "CreateCompletionResponse",
    ),
    case(
        "completion-n2",
        "completions",
        "/v1/completions",
        {"prompt": PROMPT, "n": 2, "temperature": 1, "seed": 3},
        "CreateCompletionResponse",
    ),
    case("chat", "chat", "/v1/chat/completions", {"messages": MESSAGES}, "CreateChatCompletionResponse"),
    case(
        "chat-logprobs",
        "chat+logprobs",
        "/v1/chat/completions",
        {"messages": MESSAGES, "logprobs": True, "top_logprobs": 2},
        "CreateChatCompletionResponse",
    ),
    case(
        "chat-n2",
        "chat",
        "/v1/chat/completions",
        {"messages": MESSAGES, "n": 2, "temperature": 1, "seed": 3},
        "CreateChatCompletionResponse",
    ),
    # OpenAI: streamed completions are CreateCompletionResponse objects, chat chunks their own schema.
    case(
        "completion-stream",
        "completions",
        "/v1/completions",
        {"prompt": PROMPT},
        "CreateCompletionResponse",
        stream=True,
    ),
    case(
        "completion-stream-usage",
        "completions",
        "/v1/completions",
        {"prompt": PROMPT, "stream_options": {"include_usage": True}},
        "CreateCompletionResponse",
        stream=True,
    ),
    case(
        "chat-stream",
        "chat",
        "/v1/chat/completions",
        {"messages": MESSAGES},
        "CreateChatCompletionStreamResponse",
        stream=True,
    ),
    case(
        "chat-stream-logprobs",
        "chat+logprobs",
        "/v1/chat/completions",
        {"messages": MESSAGES, "logprobs": True, "top_logprobs": 2},
        "CreateChatCompletionStreamResponse",
        stream=True,
    ),
    case(
        "chat-stream-usage",
        "chat",
        "/v1/chat/completions",
        {"messages": MESSAGES, "stream_options": {"include_usage": True}},
        "CreateChatCompletionStreamResponse",
        stream=True,
    ),
]


@pytest.mark.parametrize(("path", "body", "schema", "stream"), CASES)
def test_response_matches_openai_schema(vllm_http, vllm_server, path, body, schema, stream):
    body = {"model": vllm_server.model, **body}
    if stream:
        with vllm_http.stream("POST", path, json=body) as response:
            chunks = read_stream(response)
        found = sorted({problem for chunk in chunks for problem in problems(chunk, schema)})
        if found:  # every chunk is checked: the union of their problems is the verdict
            raise mismatch(schema, found, what=f"a streamed chunk (of {len(chunks)})")
    else:
        response = vllm_http.post(path, json=body)
        answered_ok(response, path, limit=500)
        validate(response.json(), schema)


ERRORS = {
    "unknown-model": ({"model": "pytest-vllm-no-such-model"}, 404),
    "bad-temperature": ({"temperature": -1}, 400),
}


@pytest.mark.vllm_requires("chat")
@pytest.mark.parametrize(("change", "status"), ERRORS.values(), ids=ERRORS.keys())
def test_error_matches_openai_schema(vllm_http, vllm_server, change, status):
    body = {"model": vllm_server.model, "messages": MESSAGES, "max_tokens": 2, **change}
    response = vllm_http.post("/v1/chat/completions", json=body)
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:300]}"
    validate(response.json(), "ErrorResponse")
