"""POST /v1/chat/completions: roles and turns, n, length limits, stop, seed, logprobs, usage.

Each check states a protocol fact (OpenAI's chat completions API, or vLLM's documented
extensions such as `ignore_eos` and `include_stop_str_in_output`) and holds for any model
with a chat template. Response shapes are checked against OpenAI's schema in test_schema.py.
"""

import pytest

from pytest_vllm.sse import stop_string_from

pytestmark = pytest.mark.vllm_requires("chat")

SCHEMA = "CreateChatCompletionResponse"
TOKENS = 8
SAMPLINGS = {"greedy": {"temperature": 0}, "seeded": {"temperature": 1, "seed": 1234}}
USER = {"role": "user", "content": "Name three colours."}
CONVERSATIONS = {
    "user": [USER],
    "system+user": [{"role": "system", "content": "You answer briefly."}, USER],
    "multi-turn": [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello."},
        USER,
    ],
}
VLLM_FIELDS = {"ignore_eos", "include_stop_str_in_output"}


@pytest.fixture
def chat(vllm_openai, vllm_server):
    """`chat(**params)`: a chat completion through the SDK, greedy and `TOKENS` long unless told
    otherwise, returned as its wire JSON. vLLM's own fields go in `extra_body`."""

    def create(**params):
        limit = {} if "max_completion_tokens" in params else {"max_tokens": TOKENS}
        params = {"messages": [USER], **limit, "temperature": 0, "ignore_eos": True, **params}
        extra = {key: params.pop(key) for key in list(params) if key in VLLM_FIELDS}
        response = vllm_openai.chat.completions.create(model=vllm_server.model, extra_body=extra, **params)
        return response.to_dict()

    return create


@pytest.fixture
def prompt_tokens(vllm_http, vllm_server):
    """`prompt_tokens(messages)`: how many prompt tokens vLLM's /tokenize counts for `messages`."""

    def count(messages):
        response = vllm_http.post("/tokenize", json={"model": vllm_server.model, "messages": messages})
        assert response.status_code == 200, f"/tokenize answered {response.status_code}: {response.text[:300]}"
        return response.json()["count"]

    return count


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_conversation_answers_as_assistant(chat, prompt_tokens, conversation):
    messages = CONVERSATIONS[conversation]
    body = chat(messages=messages)
    assert body["object"] == "chat.completion", f"object must be 'chat.completion', got {body['object']!r}"
    [choice] = body["choices"]
    message = choice["message"]
    assert choice["index"] == 0 and message["role"] == "assistant", f"one assistant choice, index 0: {choice}"
    assert isinstance(message["content"], str), f"the answer is text in message.content: {message}"
    assert choice["finish_reason"] == "length", f"with ignore_eos the model runs to max_tokens: {choice}"
    usage, expected = body["usage"], prompt_tokens(messages)
    assert usage["prompt_tokens"] == expected, (
        f"prompt_tokens should equal /tokenize's count for the same messages ({expected}): {usage}"
    )
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and (
        usage["completion_tokens"] == TOKENS
    ), f"completion_tokens = {TOKENS}, total = prompt + completion (OpenAI's CompletionUsage): {usage}"


def test_system_prompt_and_earlier_turns_reach_the_model(chat):
    bodies = {name: chat(messages=messages, max_tokens=1) for name, messages in CONVERSATIONS.items()}
    counts = {name: body["usage"]["prompt_tokens"] for name, body in bodies.items()}
    assert counts["user"] < counts["system+user"] < counts["multi-turn"], (
        f"a system message and earlier turns are part of the prompt, so each adds prompt tokens: {counts}"
    )


def test_n_choices(chat):
    body = chat(n=3, temperature=1, seed=7)
    indices = sorted(choice["index"] for choice in body["choices"])
    assert indices == [0, 1, 2], f"n=3 gives choices with indices 0, 1, 2: {indices}"
    roles = {choice["message"]["role"] for choice in body["choices"]}
    assert roles == {"assistant"}, f"every choice is an assistant message: {roles}"
    assert body["usage"]["completion_tokens"] == 3 * TOKENS, (
        f"usage counts the tokens of all n choices (3 x {TOKENS}, ignore_eos): {body['usage']}"
    )


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
def test_length_limit_is_exact_with_ignore_eos(chat, field):
    body = chat(**{field: 5})
    assert body["choices"][0]["finish_reason"] == "length", f"{field}=5 cut it: {body['choices'][0]}"
    assert body["usage"]["completion_tokens"] == 5, (
        f"OpenAI's {field} caps the completion; with ignore_eos exactly 5 tokens come: {body['usage']}"
    )


@pytest.mark.parametrize("include", [False, True], ids=["stop-excluded", "stop-included"])
def test_stop_string(chat, include):
    full = chat(max_tokens=12)["choices"][0]["message"]["content"]
    stop = stop_string_from(full)
    body = chat(max_tokens=12, stop=[stop], include_stop_str_in_output=include)
    choice = body["choices"][0]
    end = full.find(stop) + (len(stop) if include else 0)
    assert (choice["message"]["content"], choice["finish_reason"]) == (full[:end], "stop"), (
        f"the greedy answer {full!r} holds the stop string {stop!r}, so generation ends there with "
        f"finish_reason 'stop', the stop string {'kept' if include else 'removed'} "
        f"(include_stop_str_in_output={include}): got {choice}"
    )


@pytest.mark.parametrize("sampling", SAMPLINGS.values(), ids=SAMPLINGS.keys())
def test_same_request_same_answer(chat, sampling):
    first, second = chat(**sampling), chat(**sampling)
    answers = [body["choices"][0]["message"]["content"] for body in (first, second)]
    assert answers[0] == answers[1], f"{sampling} makes generation reproducible: {answers}"


@pytest.mark.vllm_requires("logprobs")
@pytest.mark.parametrize("top", [0, 3], ids=["top_logprobs=0", "top_logprobs=3"])
def test_logprobs_structure(chat, top):
    body = chat(logprobs=True, top_logprobs=top)
    content = (body["choices"][0]["logprobs"] or {}).get("content")
    assert isinstance(content, list) and len(content) == body["usage"]["completion_tokens"], (
        f"logprobs.content holds one entry per generated token ({body['usage']['completion_tokens']}), "
        f"not the completions format: {body['choices'][0]['logprobs']}"
    )
    for entry in content:
        keys = {"token", "logprob", "bytes", "top_logprobs"}
        assert set(entry) >= keys, f"OpenAI's ChatCompletionTokenLogprob has {sorted(keys)}: {entry}"
        assert entry["logprob"] <= 0, f"log probabilities are <= 0: {entry}"
        if "\ufffd" not in entry["token"]:
            assert entry["bytes"] == list(entry["token"].encode()), f"bytes are the token's UTF-8 bytes: {entry}"
        values = [alternative["logprob"] for alternative in entry["top_logprobs"]]
        assert len(values) == top, f"top_logprobs={top} lists {top} alternatives per token: {entry}"
        assert values == sorted(values, reverse=True), f"top_logprobs come likeliest first: {values}"
        if top:
            assert entry["logprob"] == values[0], f"at temperature 0 the chosen token is the likeliest: {entry}"
