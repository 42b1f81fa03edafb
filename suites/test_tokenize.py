"""vLLM's /tokenize and /detokenize: counts, limits, round trips, special tokens, the chat form."""

import pytest

from pytest_vllm.checks.expect import answered_ok

pytestmark = pytest.mark.vllm_requires("tokenize")

TEXTS = {
    "words": "Hello world",
    "sentence": "The quick brown fox jumps over the lazy dog.",
    "digits-and-punctuation": "a1, b2; c3 (d4) = 10!",
}
MESSAGES = [{"role": "user", "content": "Hello, how are you?"}]


def _tokenize(http, server, **fields) -> dict:
    response = http.post("/tokenize", json={"model": server.model, **fields})
    answered_ok(response, f"/tokenize {fields}")
    return response.json()


def _detokenize(http, server, tokens: list[int]) -> str:
    response = http.post("/detokenize", json={"model": server.model, "tokens": tokens})
    answered_ok(response, "/detokenize")
    return response.json()["prompt"]


def test_count_and_max_model_len(vllm_http, vllm_server):
    answer = _tokenize(vllm_http, vllm_server, prompt=TEXTS["sentence"])
    tokens = answer["tokens"]
    assert tokens and all(isinstance(token, int) and token >= 0 for token in tokens), (
        f"tokens should be non-negative token ids, got {tokens}"
    )
    assert answer["count"] == len(tokens), f"count is the number of tokens: {answer['count']} != {len(tokens)}"
    listing = vllm_http.get("/v1/models").json()
    models = {entry["id"]: entry for entry in listing["data"]}
    assert answer["max_model_len"] == models[vllm_server.model]["max_model_len"], (
        f"/tokenize max_model_len {answer['max_model_len']} should be the model's, as /v1/models "
        f"lists it ({models[vllm_server.model].get('max_model_len')})"
    )


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_round_trip(vllm_http, vllm_server, text):
    tokens = _tokenize(vllm_http, vllm_server, prompt=text, add_special_tokens=False)["tokens"]
    decoded = _detokenize(vllm_http, vllm_server, tokens)
    again = _tokenize(vllm_http, vllm_server, prompt=decoded, add_special_tokens=False)["tokens"]
    assert again == tokens, (
        f"detokenize gives back text that tokenizes to the same tokens (a tokenizer may normalise case or "
        f"spacing, never lose a token); sent {text!r}, got {decoded!r} from {tokens}, which tokenizes to {again}"
    )


def test_add_special_tokens(vllm_http, vllm_server):
    text = TEXTS["sentence"]
    plain = _tokenize(vllm_http, vllm_server, prompt=text, add_special_tokens=False, return_token_strs=True)
    special = _tokenize(vllm_http, vllm_server, prompt=text, add_special_tokens=True, return_token_strs=True)
    default = _tokenize(vllm_http, vllm_server, prompt=text)
    assert default["tokens"] == special["tokens"], "add_special_tokens defaults to true for a prompt"
    inner, outer = plain["tokens"], special["tokens"]
    starts = [i for i in range(len(outer) - len(inner) + 1) if outer[i : i + len(inner)] == inner]
    assert starts, (
        f"special tokens are only added around the text: the tokens without them ({inner}) "
        f"should appear in those with them ({outer})"
    )
    start = starts[0]
    assert special["token_strs"][start : start + len(inner)] == plain["token_strs"], (
        f"the text's tokens have the same token_strs with or without special tokens: "
        f"{special['token_strs']} vs {plain['token_strs']}"
    )
    assert (outer == inner) == (special["token_strs"] == plain["token_strs"]), (
        f"tokens and token_strs differ together: {outer} / {special['token_strs']} with special "
        f"tokens, {inner} / {plain['token_strs']} without"
    )


def test_return_token_strs(vllm_http, vllm_server):
    answer = _tokenize(vllm_http, vllm_server, prompt=TEXTS["words"], return_token_strs=True)
    strs = answer["token_strs"]
    assert isinstance(strs, list) and len(strs) == answer["count"], (
        f"return_token_strs gives one string per token ({answer['count']}), got {strs!r}"
    )
    assert all(isinstance(s, str) and s for s in strs), f"each token string is non-empty: {strs!r}"
    assert _tokenize(vllm_http, vllm_server, prompt=TEXTS["words"]).get("token_strs") is None, (
        "token_strs are only sent when asked for with return_token_strs"
    )


@pytest.mark.vllm_requires("chat")
def test_messages_count_grows_with_a_message(vllm_http, vllm_server):
    one = _tokenize(vllm_http, vllm_server, messages=MESSAGES)
    more = [*MESSAGES, {"role": "assistant", "content": "Fine."}, {"role": "user", "content": "Good."}]
    two = _tokenize(vllm_http, vllm_server, messages=more)
    assert one["count"] == len(one["tokens"]) and two["count"] == len(two["tokens"])
    assert two["count"] > one["count"], (
        f"two more messages must add tokens: {one['count']} tokens for {MESSAGES}, {two['count']} for {more}"
    )


@pytest.mark.vllm_requires("chat")
def test_messages_count_matches_chat_usage(vllm_http, vllm_server):
    count = _tokenize(vllm_http, vllm_server, messages=MESSAGES)["count"]
    response = vllm_http.post(
        "/v1/chat/completions",
        json={"model": vllm_server.model, "messages": MESSAGES, "max_tokens": 1, "temperature": 0},
    )
    assert response.status_code == 200, response.text[:300]
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == count, (
        f"/tokenize with messages applies the same chat template as /v1/chat/completions (both add "
        f"the generation prompt by default): count {count}, chat usage.prompt_tokens {usage['prompt_tokens']}"
    )
