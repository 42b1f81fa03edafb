"""Many requests at once, with pytest-asyncio and the async openai client.

Simultaneous streams each arrive well-formed and complete; a burst of requests is queued and
answered, never refused. Greedy answers under concurrency equal the sequential ones except where
batching may round differently: vLLM is not batch-invariant by default, so a concurrent answer
may leave the sequential one only at a near-tie, a token whose lead over the runner-up was at
most `NEAR_TIE` nats (an answer crossed with another request's leaves it where the model was
sure). Whether a dropped stream is stopped is not checked: on a loaded machine the abort races
the end of any generation the model's context allows (see the closing note of issue 9).

A server that fails under load fails in whichever way timing decides (a stream cut off, or ended
without its finish and usage; a refusal or a reset), so each check fingerprints its failure by
its class (`failure_class`), and the reason keeps the symptom of the run.
"""

import asyncio
import time

import httpx
import pytest

from pytest_vllm.checks.answers import NEAR_TIE, lead
from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.sse import join_choices, read_stream
from pytest_vllm.verdicts import failure_class

pytestmark = [pytest.mark.asyncio, pytest.mark.vllm_requires("chat")]

STREAMS = 16
BURST = 48
TOKENS = 8
MESSAGES = [{"role": "user", "content": "Count to ten."}]
PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "Hello, my name is",
    "1, 2, 3, 4,",
    "The weather today",
    "My favourite colour is",
    "In the morning I",
    "Dogs and cats",
]
COPIES = 4  # each prompt this many times at once
GREEDY_TOKENS = 16


@pytest.fixture
def body(vllm_server, eos_fields):
    """`body(**fields)`: a greedy chat request, `TOKENS` long (exactly so where vLLM's ignore_eos is honoured)."""
    return lambda **fields: {
        "model": vllm_server.model,
        "messages": MESSAGES,
        "max_tokens": TOKENS,
        "temperature": 0,
        **eos_fields,
        **fields,
    }


@pytest.fixture
def async_http(vllm, vllm_server):
    """An async httpx client on the server with its key (no retries: a refusal must show)."""
    from pytest_vllm.launchers import auth_headers

    limits = httpx.Limits(max_connections=BURST + STREAMS)
    return httpx.AsyncClient(
        base_url=vllm_server.base_url,
        headers=auth_headers(vllm_server.api_key),
        timeout=vllm.settings.request_timeout,
        limits=limits,
    )


async def _stream(client, body):
    """The chunks of one stream, read to its end, its SSE framing checked (by read_stream)."""
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        raw = await response.aread()
    return read_stream(httpx.Response(response.status_code, headers=response.headers, content=raw))


async def test_simultaneous_streams_are_each_complete(async_http, body, record_property):
    started = time.monotonic()
    request = body(stream=True, stream_options={"include_usage": True})
    with failure_class(f"{STREAMS} simultaneous streams are not each complete and well-formed"):
        async with async_http:
            results = await asyncio.gather(*(_stream(async_http, request) for _ in range(STREAMS)))
        record_property("streams", f"{STREAMS} streams in {time.monotonic() - started:.1f} s")
        for number, chunks in enumerate(results):
            [choice] = join_choices(chunks).values()
            usage = chunks[-1].get("usage") or {}
            assert choice["finish_reason"] in ("length", "stop") and 0 < usage.get("completion_tokens", 0) <= TOKENS, (
                f"stream {number} of {STREAMS} at once ends with one finish_reason and its usage: "
                f"{choice['finish_reason']!r}, {usage}"
            )
        texts = {join_choices(chunks)[0]["message"]["content"] for chunks in results}
        assert all(texts), f"every simultaneous stream carries text: {texts}"


async def test_a_burst_is_queued_not_refused(async_http, body, record_property):
    started = time.monotonic()
    with failure_class(f"a burst of {BURST} requests is not each answered (refused or dropped)"):
        async with async_http:
            responses = await asyncio.gather(
                *(async_http.post("/v1/chat/completions", json=body(max_tokens=2)) for _ in range(BURST))
            )
        record_property("burst", f"{BURST} requests in {time.monotonic() - started:.1f} s")
        refused = sorted({(r.status_code, r.text[:200]) for r in responses if r.status_code != 200})
        assert not refused, (
            f"{BURST} requests at once are queued and answered (a server with fewer sequence slots waits), "
            f"never refused: {len(refused)} kinds of refusal, e.g. {refused[:2]}"
        )


def _first_difference(a: list, b: list) -> int | None:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
        None if len(a) == len(b) else min(len(a), len(b)),
    )


@pytest.mark.vllm_requires("completions", "logprobs")
async def test_concurrent_greedy_answers_leave_the_sequential_ones_only_at_near_ties(
    vllm_server, vllm_http, async_http, eos_fields, record_property
):
    def request(prompt):
        return {
            "model": vllm_server.model,
            "prompt": prompt,
            "max_tokens": GREEDY_TOKENS,
            "temperature": 0,
            "logprobs": 2,
            **eos_fields,
        }

    def logprobs(response):
        answered_ok(response)
        return response.json()["choices"][0]["logprobs"]

    sequential = {prompt: logprobs(vllm_http.post("/v1/completions", json=request(prompt))) for prompt in PROMPTS}
    with failure_class("greedy answers sent at once are not each the sequential answer, beyond near-ties"):
        async with async_http:
            responses = await asyncio.gather(
                *(async_http.post("/v1/completions", json=request(p)) for p in PROMPTS * COPIES)
            )
        near_ties, far = 0, []
        for prompt, response in zip(PROMPTS * COPIES, responses, strict=False):
            alone, together = sequential[prompt], logprobs(response)
            at = _first_difference(alone["tokens"], together["tokens"])
            if at is None:
                continue
            if at >= len(alone["tokens"]):
                far.append(f"{prompt!r}: {len(together['tokens'])} tokens, {len(alone['tokens'])} alone")
                continue
            margin = lead(alone["top_logprobs"][at].values())
            if margin <= NEAR_TIE:
                near_ties += 1
            else:
                far.append(
                    f"{prompt!r} at token {at}: {together['tokens'][at]!r} for {alone['tokens'][at]!r}, "
                    f"which led by {margin:.2f} nats"
                )
        total = len(responses)
        same = total - near_ties - len(far)
        record_property(
            "greedy under concurrency",
            f"{total} answers at once: {same} identical to the sequential ones, {near_ties} left them at a near-tie",
        )
        assert not far, (
            f"{len(far)} of {total} greedy answers sent at once left the sequential answer where the model was sure "
            f"(batching can only flip a near-tie, within {NEAR_TIE} nats): {far[:3]}"
        )
