"""POST /v1/completions: every prompt form, the sampling controls, logprobs and usage.

Each check states a protocol fact (OpenAI's completions API, or vLLM's documented extensions:
`ignore_eos`, `min_tokens`, `stop_token_ids`, `include_stop_str_in_output`, `return_token_ids`,
`return_tokens_as_token_ids`) and holds for any model: determinism comes from temperature 0 or
a seed, lengths from `ignore_eos` where the server honours vLLM's fields (`vllm_sampling`; elsewhere
the length rules that hold without it apply). Response shapes are checked against OpenAI's schema in
test_schema.py.
"""

import pytest

from pytest_vllm.checks.answers import agreeing, answer, length_problem
from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.sse import stop_string_in

pytestmark = pytest.mark.vllm_requires("completions")

PROMPT = "The quick brown fox"
OTHER_PROMPT = "Once upon a time"
TOKENS = 8
SAMPLINGS = {"greedy": {"temperature": 0}, "seeded": {"temperature": 1, "seed": 1234}}
VLLM_FIELDS = {
    "ignore_eos",
    "min_tokens",
    "stop_token_ids",
    "include_stop_str_in_output",
    "return_token_ids",
    "return_tokens_as_token_ids",
}


@pytest.fixture
def complete(vllm_openai, vllm_server, ignore_eos):
    """`complete(**params)`: a completion through the SDK, greedy and `TOKENS` long unless told
    otherwise, returned as its wire JSON. vLLM's own fields go in `extra_body`."""

    def create(**params):
        params = {"prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, **params}
        if ignore_eos:
            params.setdefault("ignore_eos", True)
        extra = {key: params.pop(key) for key in list(params) if key in VLLM_FIELDS}
        response = vllm_openai.completions.create(model=vllm_server.model, extra_body=extra, **params)
        return answer(response.to_dict())

    return create


@pytest.fixture
def tokenize(vllm, vllm_http, vllm_server):
    """`tokenize(text)`: the prompt token ids vLLM's /tokenize gives for `text`."""
    vllm.require(vllm_server, "tokenize")

    def token_ids(text):
        response = vllm_http.post("/tokenize", json={"model": vllm_server.model, "prompt": text})
        answered_ok(response, "/tokenize")
        body = response.json()
        assert body["count"] == len(body["tokens"]), f"/tokenize count disagrees with its tokens: {body}"
        return body["tokens"]

    return token_ids


def test_single_prompt(complete, ignore_eos):
    body = complete()
    assert body["object"] == "text_completion", f"object must be 'text_completion', got {body['object']!r}"
    [choice] = body["choices"]
    assert choice["index"] == 0 and isinstance(choice["text"], str), f"one choice with index 0: {choice}"
    problem = length_problem(choice["finish_reason"], body["usage"]["completion_tokens"], TOKENS, ignore_eos)
    assert problem is None, problem


def test_prompt_list_keeps_order_and_index(complete):
    prompts = [PROMPT, OTHER_PROMPT]
    batch = complete(prompt=prompts)
    singles = [complete(prompt=prompt) for prompt in prompts]
    indices = [choice["index"] for choice in batch["choices"]]
    assert indices == [0, 1], f"one choice per prompt, index = the prompt's position, got {indices}"
    for choice, single, prompt in zip(batch["choices"], singles, prompts, strict=False):
        assert choice["text"] == single["choices"][0]["text"], (
            f"greedy choice {choice['index']} should be what prompt {prompt!r} alone gives: "
            f"{choice['text']!r} != {single['choices'][0]['text']!r}"
        )


@pytest.mark.parametrize("form", ["list[int]", "list[list[int]]"])
def test_token_id_prompts(complete, tokenize, form):
    prompts = [PROMPT] if form == "list[int]" else [PROMPT, OTHER_PROMPT]
    ids = [tokenize(prompt) for prompt in prompts]
    by_ids = complete(prompt=ids[0] if form == "list[int]" else ids)
    by_text = complete(prompt=prompts)
    texts = [choice["text"] for choice in by_ids["choices"]]
    expected = [choice["text"] for choice in by_text["choices"]]
    assert texts == expected, (
        f"a prompt given as the token ids /tokenize returns must complete as the text does (greedy): "
        f"{texts} != {expected}"
    )
    assert by_ids["usage"]["prompt_tokens"] == sum(map(len, ids)), (
        f"prompt_tokens should count the ids sent ({sum(map(len, ids))}): {by_ids['usage']}"
    )


def test_echo_prepends_the_prompt(complete):
    echoed = complete(echo=True)
    plain = complete()
    text, completion = echoed["choices"][0]["text"], plain["choices"][0]["text"]
    assert text == PROMPT + completion, (
        f"with echo the text is the prompt followed by the completion: {text!r} != {PROMPT + completion!r}"
    )


@pytest.mark.vllm_requires("logprobs")
def test_logprobs_align_with_the_tokens(complete):
    body = complete(logprobs=3)
    logprobs = body["choices"][0]["logprobs"]
    tokens, values = logprobs["tokens"], logprobs["token_logprobs"]
    lengths = {key: len(logprobs[key]) for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
    assert set(lengths.values()) == {body["usage"]["completion_tokens"]}, (
        f"logprobs holds one entry per generated token ({body['usage']['completion_tokens']}): {lengths}"
    )
    offsets = logprobs["text_offset"]
    start = offsets[0] if offsets and offsets[0] == len(PROMPT) else 0  # counted in the text, or after the prompt
    expected = [start + sum(len(token) for token in tokens[:i]) for i in range(len(tokens))]
    assert offsets == expected, (
        f"text_offset[i] is where tokens[i] starts in the text (OpenAI's spec does not say whether after the "
        f"prompt): {offsets} != {expected}"
    )
    assert all(value <= 0 for value in values), f"log probabilities are <= 0: {values}"


@pytest.mark.vllm_requires("logprobs", "vllm_sampling")
@pytest.mark.parametrize("count", [1, 5])
def test_top_logprobs_size(complete, count):
    body = complete(logprobs=count, return_tokens_as_token_ids=True)
    logprobs = body["choices"][0]["logprobs"]
    sizes = [len(top) for top in logprobs["top_logprobs"]]
    assert sizes and all(size in (count, count + 1) for size in sizes), (
        f"logprobs={count} gives the {count} likeliest tokens, plus the sampled one when it is not "
        f"among them (OpenAI: up to logprobs+1): sizes {sizes}"
    )
    for token, value, top in zip(
        logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=False
    ):
        assert top.get(token) == value, (
            f"the sampled token is always among its top_logprobs, with its own logprob: {token!r} {value} {top}"
        )
        assert value == max(top.values()), f"at temperature 0 the chosen token is the likeliest: {token!r} {top}"


@pytest.mark.vllm_requires("vllm_sampling")
def test_n_choices_each_run_to_max_tokens(complete):
    body = complete(n=3, temperature=1, seed=7)
    indices = sorted(choice["index"] for choice in body["choices"])
    assert indices == [0, 1, 2], f"n=3 gives choices with indices 0, 1, 2: {indices}"
    reasons = [choice["finish_reason"] for choice in body["choices"]]
    assert reasons == ["length"] * 3, f"with ignore_eos every choice runs to max_tokens: {reasons}"
    assert body["usage"]["completion_tokens"] == 3 * TOKENS, (
        f"usage counts the tokens of all n choices (3 x {TOKENS}): {body['usage']}"
    )


@pytest.mark.vllm_requires("vllm_sampling")
@pytest.mark.parametrize("include", [False, True], ids=["stop-excluded", "stop-included"])
def test_stop_string(complete, include):
    full, tokens, stop = stop_string_in(lambda tokens: complete(max_tokens=tokens)["choices"][0]["text"])
    body = complete(max_tokens=tokens, stop=[stop], include_stop_str_in_output=include)
    choice = body["choices"][0]
    end = full.find(stop) + (len(stop) if include else 0)
    assert (choice["text"], choice["finish_reason"]) == (full[:end], "stop"), (
        f"the greedy output {full!r} holds the stop string {stop!r}, so generation ends there with "
        f"finish_reason 'stop', the stop string {'kept' if include else 'removed'} "
        f"(include_stop_str_in_output={include}): got {choice}"
    )
    assert choice.get("stop_reason") == stop, f"vLLM names the stop string matched in stop_reason: {choice}"


@pytest.mark.vllm_requires("vllm_sampling", "return_token_ids")
def test_stop_token_ids(complete):
    full = complete(max_tokens=12, return_token_ids=True)["choices"][0]["token_ids"]
    token = full[len(full) // 2]
    cut = full.index(token) + 1
    body = complete(max_tokens=12, return_token_ids=True, stop_token_ids=[token])
    choice = body["choices"][0]
    assert (choice["finish_reason"], choice["token_ids"]) == ("stop", full[:cut]), (
        f"greedy output {full} holds token {token}, so stop_token_ids=[{token}] ends generation at its "
        f"first occurrence (that token included) with finish_reason 'stop': got {choice}"
    )
    assert choice.get("stop_reason") == token, f"vLLM names the stop token in stop_reason: {choice}"
    assert body["usage"]["completion_tokens"] == cut, f"usage counts {cut} tokens: {body['usage']}"


@pytest.mark.vllm_requires("vllm_sampling", "return_token_ids")
def test_min_tokens_defers_stopping(complete):
    first = complete(max_tokens=1, return_token_ids=True)["choices"][0]["token_ids"][0]
    body = complete(return_token_ids=True, stop_token_ids=[first], min_tokens=4)
    ids = body["choices"][0]["token_ids"]
    assert len(ids) >= 4 and first not in ids[:4], (
        f"greedy decoding starts with token {first}, a stop token here; min_tokens=4 forbids stopping "
        f"before 4 tokens, so the first 4 are other tokens: got {ids}"
    )


@pytest.mark.parametrize("max_tokens", [1, 5])
def test_max_tokens_is_exact_with_ignore_eos(complete, ignore_eos, max_tokens):
    """max_tokens caps the completion: exactly, where vLLM's ignore_eos is honoured."""
    body = complete(max_tokens=max_tokens)
    problem = length_problem(
        body["choices"][0]["finish_reason"], body["usage"]["completion_tokens"], max_tokens, ignore_eos
    )
    assert problem is None, problem


@pytest.mark.parametrize("sampling", SAMPLINGS.values(), ids=SAMPLINGS.keys())
def test_same_request_same_text(complete, sampling):
    texts = agreeing(lambda: tuple(complete(**sampling)["choices"][0]["text"] for _ in range(2)))
    assert texts[0] == texts[1], f"{sampling} makes generation reproducible: {texts}"


@pytest.mark.vllm_requires("return_token_ids")
def test_logit_bias_forces_a_token(complete, tokenize):
    token = tokenize(PROMPT)[-1]
    body = complete(logit_bias={str(token): 100}, return_token_ids=True)
    ids = body["choices"][0]["token_ids"]
    assert ids == [token] * TOKENS, f"logit_bias +100 on token {token} makes greedy decoding pick it always: {ids}"


@pytest.mark.parametrize("prompts", [[PROMPT], [PROMPT, OTHER_PROMPT]], ids=["one-prompt", "two-prompts"])
def test_usage_arithmetic(complete, tokenize, ignore_eos, prompts):
    body = complete(prompt=prompts)
    usage = body["usage"]
    prompt_tokens = sum(len(tokenize(prompt)) for prompt in prompts)
    assert usage["prompt_tokens"] == prompt_tokens, (
        f"prompt_tokens should equal /tokenize's count for the prompts ({prompt_tokens}): {usage}"
    )
    limit = TOKENS * len(prompts)
    assert usage["completion_tokens"] == limit if ignore_eos else usage["completion_tokens"] <= limit, (
        f"{'exactly' if ignore_eos else 'at most'} {TOKENS} tokens per prompt: {usage}"
    )
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], (
        f"total_tokens = prompt_tokens + completion_tokens (OpenAI's CompletionUsage): {usage}"
    )
