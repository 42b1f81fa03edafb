"""Many requests at once, with pytest-asyncio and the async openai client.

Simultaneous streams each arrive well-formed and complete; a burst of requests is queued and
answered, never refused. Greedy answers
under concurrency are not compared with sequential ones: vLLM is not batch-invariant by default
(the same prompt batched with others may round differently), so such a check could not give the
same verdict twice.
"""

import asyncio
import time

import httpx
import pytest

from pytest_vllm.sse import join_choices, read_stream

pytestmark = [pytest.mark.asyncio, pytest.mark.vllm_requires("chat")]

STREAMS = 16
BURST = 48
TOKENS = 8
MESSAGES = [{"role": "user", "content": "Count to ten."}]


@pytest.fixture
def body(vllm, vllm_server):
    """`body(**fields)`: a greedy chat request, `TOKENS` long (exactly so where vLLM's ignore_eos is honoured)."""
    extra = {"ignore_eos": True} if vllm.has(vllm_server, "vllm_sampling") else {}
    return lambda **fields: {"model": vllm_server.model, "messages": MESSAGES, "max_tokens": TOKENS,
                             "temperature": 0, **extra, **fields}


@pytest.fixture
def async_http(vllm, vllm_server):
    """An async httpx client on the server with its key (no retries: a refusal must show)."""
    from pytest_vllm.launchers import auth_headers

    limits = httpx.Limits(max_connections=BURST + STREAMS)
    return httpx.AsyncClient(base_url=vllm_server.base_url, headers=auth_headers(vllm_server.api_key),
                             timeout=vllm.settings.request_timeout, limits=limits)


async def _stream(client, body):
    """The chunks of one stream, read to its end, its SSE framing checked (by read_stream)."""
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        raw = await response.aread()
    return read_stream(httpx.Response(response.status_code, headers=response.headers, content=raw))


async def test_simultaneous_streams_are_each_complete(async_http, body, record_property):
    started = time.monotonic()
    request = body(stream=True, stream_options={"include_usage": True})
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
