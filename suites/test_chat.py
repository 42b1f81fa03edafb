"""POST /v1/chat/completions: roles and turns, n, length limits, stop, seed, logprobs, usage.

Each check states a protocol fact (OpenAI's chat completions API, or vLLM's documented
extensions such as `ignore_eos` and `include_stop_str_in_output`) and holds for any model
with a chat template. vLLM's fields are sent only to a server that honours them
(`vllm_sampling`); elsewhere the length rules that hold without `ignore_eos` apply.
Response shapes are checked against OpenAI's schema in test_schema.py.
"""

import pytest

from pytest_vllm.checks.answers import agreeing, answer, length_problem
from pytest_vllm.checks.sse import stop_string_in

pytestmark = pytest.mark.vllm_requires("chat")

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
def chat(vllm_openai, vllm_server, ignore_eos):
    """`chat(**params)`: a chat completion through the SDK, greedy and `TOKENS` long unless told
    otherwise, returned as its wire JSON. vLLM's own fields go in `extra_body`."""

    def create(**params):
        limit = {} if "max_completion_tokens" in params else {"max_tokens": TOKENS}
        params = {"messages": [USER], **limit, "temperature": 0, **params}
        if ignore_eos:
            params.setdefault("ignore_eos", True)
        extra = {key: params.pop(key) for key in list(params) if key in VLLM_FIELDS}
        response = vllm_openai.chat.completions.create(model=vllm_server.model, extra_body=extra, **params)
        return answer(response.to_dict())

    return create


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_conversation_answers_as_assistant(chat, ignore_eos, conversation):
    body = chat(messages=CONVERSATIONS[conversation])
    assert body["object"] == "chat.completion", f"object must be 'chat.completion', got {body['object']!r}"
    [choice] = body["choices"]
    message = choice["message"]
    assert choice["index"] == 0 and message["role"] == "assistant", f"one assistant choice, index 0: {choice}"
    assert isinstance(message["content"], str), f"the answer is text in message.content: {message}"
    usage = body["usage"]
    problem = length_problem(choice["finish_reason"], usage["completion_tokens"], TOKENS, ignore_eos)
    assert problem is None, problem
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], (
        f"total = prompt + completion (OpenAI's CompletionUsage): {usage}"
    )


def test_system_prompt_and_earlier_turns_reach_the_model(chat):
    bodies = {name: chat(messages=messages, max_tokens=1) for name, messages in CONVERSATIONS.items()}
    counts = {name: body["usage"]["prompt_tokens"] for name, body in bodies.items()}
    assert counts["user"] < counts["system+user"] < counts["multi-turn"], (
        f"a system message and earlier turns are part of the prompt, so each adds prompt tokens: {counts}"
    )


def test_n_choices(chat, ignore_eos):
    body = chat(n=3, temperature=1, seed=7)
    indices = sorted(choice["index"] for choice in body["choices"])
    assert indices == [0, 1, 2], f"n=3 gives choices with indices 0, 1, 2: {indices}"
    roles = {choice["message"]["role"] for choice in body["choices"]}
    assert roles == {"assistant"}, f"every choice is an assistant message: {roles}"
    tokens, limit = body["usage"]["completion_tokens"], 3 * TOKENS
    assert tokens == limit if ignore_eos else 3 <= tokens <= limit, (
        f"usage counts the tokens of all n choices ({'exactly' if ignore_eos else 'at most'} 3 x {TOKENS}"
        f"{', ignore_eos' if ignore_eos else ''}): {body['usage']}"
    )


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
def test_length_limit_is_exact_with_ignore_eos(chat, ignore_eos, field):
    """OpenAI's limit caps the completion: exactly, where vLLM's ignore_eos is honoured."""
    body = chat(**{field: 5})
    problem = length_problem(body["choices"][0]["finish_reason"], body["usage"]["completion_tokens"], 5, ignore_eos)
    assert problem is None, f"{field}=5 caps the completion: {problem}"


@pytest.mark.parametrize(
    "include",
    [
        pytest.param(False, id="stop-excluded"),
        pytest.param(True, id="stop-included", marks=pytest.mark.vllm_requires("vllm_sampling")),
    ],
)
def test_stop_string(chat, include):
    full, tokens, stop = stop_string_in(lambda tokens: chat(max_tokens=tokens)["choices"][0]["message"]["content"])
    body = chat(max_tokens=tokens, stop=[stop], **({"include_stop_str_in_output": True} if include else {}))
    choice = body["choices"][0]
    end = full.find(stop) + (len(stop) if include else 0)
    assert (choice["message"]["content"], choice["finish_reason"]) == (full[:end], "stop"), (
        f"the greedy answer {full!r} holds the stop string {stop!r}, so generation ends there with "
        f"finish_reason 'stop', the stop string {'kept' if include else 'removed'} "
        f"(include_stop_str_in_output={include}): got {choice}"
    )


@pytest.mark.parametrize("sampling", SAMPLINGS.values(), ids=SAMPLINGS.keys())
def test_same_request_same_answer(chat, sampling):
    answers = agreeing(lambda: tuple(chat(**sampling)["choices"][0]["message"]["content"] for _ in range(2)))
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
