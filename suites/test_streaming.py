"""Streaming (`stream: true`) of /v1/completions and /v1/chat/completions, read on the wire.

SSE framing and `[DONE]`, chunk identity (`id`, `created`), the role in the first chat delta,
one finish_reason per choice with n > 1 interleaved, `stream_options` usage (final chunk or
continuous), and parity: a greedy or seeded stream joined back equals the non-streamed answer
(text, finish_reason, usage, logprobs); a greedy pair that parts at a near-tie, which batching with
other requests may round either way, is asked again. vLLM's `ignore_eos` is sent where it is honoured
(`vllm_sampling`), so the answers run to max_tokens; elsewhere a choice may also stop earlier.
Response shapes are checked against OpenAI's schema in test_schema.py.
"""

import math

import pytest

from pytest_vllm.checks.answers import NEAR_TIE, TRIES, agreeing, lead, pause
from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.sse import choice_chunks, join_choices, read_stream
from pytest_vllm.outcomes import inconclusive
from pytest_vllm.verdicts import fingerprint

TOKENS = 6
SEEDED = {"temperature": 1, "seed": 1234}
ENDPOINTS = {
    "completions": {
        "path": "/v1/completions",
        "input": {"prompt": "The quick brown fox"},
        "object": "text_completion",
        "logprobs": {"logprobs": 2},
    },
    "chat": {
        "path": "/v1/chat/completions",
        "input": {"messages": [{"role": "user", "content": "Name three colours."}]},
        "object": "chat.completion.chunk",
        "logprobs": {"logprobs": True, "top_logprobs": 2},
    },
}


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.vllm_requires(name)) for name in ENDPOINTS])
def endpoint(request):
    """The endpoint under test (completions or chat), as its entry in ENDPOINTS."""
    return ENDPOINTS[request.param]


@pytest.fixture
def generate(vllm_http, vllm_server, endpoint, eos_fields):
    """`generate(stream=..., **params)`: the chunks of a stream (framing checked) or the JSON body."""

    def send(stream, **params):
        body = {
            "model": vllm_server.model,
            **endpoint["input"],
            "max_tokens": TOKENS,
            "temperature": 0,
            **eos_fields,
            **params,
            "stream": stream,
        }
        if stream:
            with vllm_http.stream("POST", endpoint["path"], json=body) as response:
                return read_stream(response)
        response = vllm_http.post(endpoint["path"], json=body)
        answered_ok(response, limit=500)
        return response.json()

    return send


def test_chunks_share_id_created_and_object(generate, endpoint, vllm_server):
    chunks = generate(stream=True)
    identity = {(chunk["id"], chunk["created"], chunk["model"], chunk["object"]) for chunk in chunks}
    expected_object = endpoint["object"]
    assert len(identity) == 1, (
        f"every chunk of one stream carries the same id and created (OpenAI: 'Each chunk has the same "
        f"ID/timestamp'), model and object: {sorted(identity)}"
    )
    [(_, _, model, kind)] = identity
    assert (model, kind) == (vllm_server.model, expected_object), (
        f"chunks name the model {vllm_server.model!r} and object {expected_object!r}: got {model!r}, {kind!r}"
    )
    assert all(chunk.get("usage") is None for chunk in chunks), (
        "without stream_options.include_usage no chunk carries usage (OpenAI's stream_options): "
        f"{[chunk['usage'] for chunk in chunks if chunk.get('usage') is not None][:2]}"
    )


@pytest.mark.parametrize("n", [1, 3], ids=["n=1", "n=3"])
def test_each_choice_streams_and_finishes_once(generate, endpoint, ignore_eos, n):
    sampling = SEEDED if n > 1 else {}
    chunks = generate(stream=True, n=n, **sampling)
    by_index = choice_chunks(chunks)
    assert sorted(by_index) == list(range(n)), f"n={n}: each index 0..{n - 1} gets chunks: {sorted(by_index)}"
    endings = ("length",) if ignore_eos else ("length", "stop")
    for index, parts in by_index.items():
        reasons = [part.get("finish_reason") for part in parts]
        given = [reason for reason in reasons if reason is not None]
        assert len(given) == 1 and reasons[-1] in endings, (
            f"choice {index} ends exactly once, on its last chunk, with finish_reason "
            f"{' or '.join(map(repr, endings))} ({'ignore_eos, ' if ignore_eos else ''}max_tokens={TOKENS}): "
            f"finish_reasons in order {reasons}"
        )


@pytest.mark.vllm_requires("chat")
@pytest.mark.parametrize("n", [1, 2], ids=["n=1", "n=2"])
def test_chat_role_comes_in_the_first_delta(vllm_http, vllm_server, n):
    endpoint = ENDPOINTS["chat"]
    body = {"model": vllm_server.model, **endpoint["input"], "max_tokens": TOKENS, "n": n, **SEEDED, "stream": True}
    with vllm_http.stream("POST", endpoint["path"], json=body) as response:
        chunks = read_stream(response)
    for index, parts in choice_chunks(chunks).items():
        roles = [part["delta"].get("role") for part in parts]
        assert roles[0] == "assistant" and not any(roles[1:]), (
            f"choice {index}: the first delta names the role 'assistant', later deltas don't: roles {roles}"
        )


def test_include_usage_adds_one_final_usage_chunk(generate, endpoint, ignore_eos):
    chunks = generate(stream=True, stream_options={"include_usage": True})
    *earlier, last = chunks
    final = last["choices"] == [] and bool(last.get("usage"))
    if not final:  # what is wrong, not the whole chunk
        choices, usage = "[]" if last["choices"] == [] else "not []", "present" if last.get("usage") else "absent"
        fingerprint(
            f"with include_usage the last chunk before [DONE] is not choices [] with the usage: "
            f"choices {choices}, usage {usage}"
        )
    assert final, f"with include_usage the last chunk before [DONE] has choices [] and the usage: {last}"
    wrong = [chunk for chunk in earlier if chunk.get("usage") is not None or not chunk["choices"]]
    assert not wrong, (
        "only the final chunk carries usage and empty choices (usage is null before it, OpenAI's "
        f"stream_options.include_usage): {wrong[:2]}"
    )
    usage = last["usage"]
    counted = usage["completion_tokens"] == TOKENS if ignore_eos else 0 < usage["completion_tokens"] <= TOKENS
    assert counted and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], (
        f"usage counts {'the' if ignore_eos else 'at most'} {TOKENS} completion tokens"
        f"{' (ignore_eos)' if ignore_eos else ''} and total = prompt + completion: {usage}"
    )


@pytest.mark.vllm_requires("continuous_usage_stats", "vllm_sampling")
def test_continuous_usage_stats_count_up(generate, endpoint):
    chunks = generate(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
    usages = [chunk.get("usage") for chunk in chunks]
    assert all(usages), f"continuous_usage_stats puts usage on every chunk (vLLM's stream_options): {usages}"
    completion = [usage["completion_tokens"] for usage in usages]
    assert completion == sorted(completion) and completion[-1] == TOKENS, (
        f"completion_tokens never decreases along the stream and ends at {TOKENS}: {completion}"
    )
    assert len({usage["prompt_tokens"] for usage in usages}) == 1 and all(
        usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] for usage in usages
    ), f"prompt_tokens is constant and total = prompt + completion on every chunk: {usages}"


def _counts(usage):
    return {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _choice(choice):
    """The parts of a non-streamed choice a joined stream must reproduce (logprobs aside)."""
    if "message" in choice:
        message = {key: choice["message"][key] for key in ("role", "content")}
        return {"message": message, "finish_reason": choice["finish_reason"]}
    return {"text": choice["text"], "finish_reason": choice["finish_reason"]}


def _near_tie(streamed, whole):
    """Where a greedy stream and answer part at a near-tie (batching may round it either way): a
    description, else None (they part where the model was sure, or logprobs are not there)."""
    if not (streamed.get("logprobs") and whole.get("logprobs")):
        return None
    ours, theirs = _logprob_steps(streamed["logprobs"]), _logprob_steps(whole["logprobs"])
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a[0] != b[0]), None)
    if at is None:
        return None
    margin = lead(value for _, value in theirs[at][2])
    return (
        f"token {at}, {ours[at][0]!r} for {theirs[at][0]!r}, led by {margin:.3f} nats" if margin <= NEAR_TIE else None
    )


@pytest.mark.parametrize("sampling", [{"temperature": 0}, SEEDED], ids=["greedy", "seeded"])
def test_stream_joins_to_the_non_streamed_answer(vllm, vllm_server, generate, endpoint, sampling):
    """A pair that parts is asked again, `TRIES` times in all (batching with other requests may round it
    differently, `agreeing`); a greedy pair only where it parts at a near-tie (within `NEAR_TIE` nats), and
    it is inconclusive if it parts there each time."""
    greedy = sampling["temperature"] == 0 and vllm.has(vllm_server, "logprobs")
    fields = {**sampling, **(endpoint["logprobs"] if greedy else {})}
    for attempt in range(TRIES):
        pause(attempt)
        chunks = generate(stream=True, stream_options={"include_usage": True}, **fields)
        whole = generate(stream=False, **fields)
        streamed = join_choices(chunks)
        joined = {index: _choice(choice) for index, choice in streamed.items()}
        expected = {choice["index"]: _choice(choice) for choice in whole["choices"]}
        tie = _near_tie(streamed.get(0, {}), whole["choices"][0]) if greedy and joined != expected else None
        if joined == expected or (greedy and tie is None):  # greedy answers part only at near-ties
            break
    else:
        if greedy:
            inconclusive(f"the greedy stream and answer parted at a near-tie each of {TRIES} times: {tie}")
    assert joined == expected, (
        f"{sampling}: the joined stream must equal the non-streamed answer:\n{joined}\n!=\n{expected}"
    )
    assert _counts(chunks[-1]["usage"]) == _counts(whole["usage"]), (
        f"the stream's usage equals the non-streamed usage: {chunks[-1]['usage']} != {whole['usage']}"
    )


def _logprob_steps(logprobs):
    """(token, logprob, top alternatives) per generated token, in either API's format."""
    if "content" in logprobs:
        return [
            (entry["token"], entry["logprob"], [(alt["token"], alt["logprob"]) for alt in entry["top_logprobs"]])
            for entry in logprobs["content"]
        ]
    return [
        (token, value, sorted(top.items()), offset)
        for token, value, top, offset in zip(
            logprobs["tokens"],
            logprobs["token_logprobs"],
            logprobs["top_logprobs"],
            logprobs["text_offset"],
            strict=False,
        )
    ]


def _same_steps(streamed, whole):
    """Equal tokens and offsets; logprobs equal up to float noise from batching (1e-4)."""
    if len(streamed) != len(whole):
        return False
    for a, b in zip(streamed, whole, strict=False):
        numbers = [(a[1], b[1]), *((x[1], y[1]) for x, y in zip(a[2], b[2], strict=False))]
        if a[0] != b[0] or a[3:] != b[3:] or [x[0] for x in a[2]] != [y[0] for y in b[2]]:
            return False
        if not all(math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-4) for x, y in numbers):
            return False
    return True


@pytest.mark.vllm_requires("logprobs")
@pytest.mark.parametrize("sampling", [{"temperature": 0}, SEEDED], ids=["greedy", "seeded"])
def test_stream_logprobs_join_to_the_non_streamed_logprobs(generate, endpoint, sampling):
    def pair():
        chunks = generate(stream=True, **endpoint["logprobs"], **sampling)
        whole = generate(stream=False, **endpoint["logprobs"], **sampling)
        [streamed] = join_choices(chunks).values()
        return streamed, {**whole["choices"][0], "usage": whole["usage"]}

    def steps(choice):
        return _logprob_steps(choice["logprobs"])

    streamed, whole = agreeing(pair, lambda a, b: _same_steps(steps(a), steps(b)))
    streamed_steps, whole_steps = steps(streamed), steps(whole)
    assert len(whole_steps) == whole["usage"]["completion_tokens"] and _same_steps(streamed_steps, whole_steps), (
        f"{sampling}: the streamed logprobs, joined, must equal the non-streamed ones (one per completion token):"
        f"\n{streamed_steps}\n!=\n{whole_steps}"
    )
