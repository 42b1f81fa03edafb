"""HTTP transports that tell a connection the server broke, or a busy server, from a wrong answer.

A request whose connection the server resets or closes before answering is sent once more on
a fresh connection (a kept-alive connection the server broke must not fail every later check).
A retry that succeeds is recorded as a finding of its own, with the request that came before;
a retry that fails too raises `ServerFault`, whose message is the check's reason.

A 429 (rate limited) or 503 (no capacity) is neither an answer nor a rejection of the request:
it is asked again after the server's Retry-After while the request timeout allows, and then
raises `ServerFault` saying so (a gateway's cooldown must not pass for a 4xx validation).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx

from pytest_vllm.outcomes import ServerFault, lost_contact_fingerprint

if TYPE_CHECKING:
    from pytest_vllm.exchanges import Recorder

_BROKEN = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
_BUSY = {429: "rate limited", 503: "no capacity"}
_BUSY_WAIT = 1.0  # seconds before asking a busy server again when it says no Retry-After


def _busy_wait(request: httpx.Request, response: httpx.Response, started: float) -> float:
    """Seconds to wait before asking again after a busy answer; ServerFault once past the timeout."""
    try:
        wait = max(float(response.headers.get("retry-after", _BUSY_WAIT)), 0.1)
    except ValueError:  # an HTTP date: not worth parsing for a test run
        wait = _BUSY_WAIT
    timeout = (request.extensions.get("timeout") or {}).get("read") or 120.0
    if time.monotonic() + wait > started + timeout:
        raise ServerFault(
            f"the server answered {response.status_code} ({_BUSY[response.status_code]}) to "
            f"{request.method} {request.url.path}, and again when asked after its Retry-After for "
            f"{time.monotonic() - started:.0f} s: busy, neither an answer nor a rejection",
            f"busy (429 or 503) past the request timeout: {request.method} {request.url.path}",
        )
    return wait


def _fault(request: httpx.Request, first: Exception, second: Exception) -> ServerFault:
    return ServerFault(
        f"connection reset by the server: {request.method} {request.url.path} got no answer "
        f"({type(first).__name__}), nor on a fresh connection ({type(second).__name__}: {second})",
        lost_contact_fingerprint(f"{request.method} {request.url.path}"),
    )


class _Closing(httpx.SyncByteStream):
    """A response body that closes its one-off transport when read or closed."""

    def __init__(self, stream: Any, transport: httpx.HTTPTransport) -> None:
        self.stream, self.transport = stream, transport

    def __iter__(self):
        yield from self.stream

    def close(self) -> None:
        self.stream.close()
        self.transport.close()


class _AsyncClosing(httpx.AsyncByteStream):
    def __init__(self, stream: Any, transport: httpx.AsyncHTTPTransport) -> None:
        self.stream, self.transport = stream, transport

    async def __aiter__(self):
        async for part in self.stream:
            yield part

    async def aclose(self) -> None:
        await self.stream.aclose()
        await self.transport.aclose()


class RetryingTransport(httpx.HTTPTransport):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        response = self._send(request)
        while response.status_code in _BUSY:
            response.read()
            response.close()
            time.sleep(_busy_wait(request, response, started))
            response = self._send(request)
        return response

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except _BROKEN as first:
            fresh = httpx.HTTPTransport()
            try:
                response = fresh.handle_request(request)
            except _BROKEN as second:
                fresh.close()
                raise _fault(request, first, second) from second
            except BaseException:
                fresh.close()
                raise
            self.recorder.connection_reset(request, first)
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=_Closing(response.stream, fresh),
                extensions=response.extensions,
            )


class AsyncRetryingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        response = await self._send(request)
        while response.status_code in _BUSY:
            await response.aread()
            await response.aclose()
            await asyncio.sleep(_busy_wait(request, response, started))
            response = await self._send(request)
        return response

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except _BROKEN as first:
            fresh = httpx.AsyncHTTPTransport()
            try:
                response = await fresh.handle_async_request(request)
            except _BROKEN as second:
                await fresh.aclose()
                raise _fault(request, first, second) from second
            except BaseException:
                await fresh.aclose()
                raise
            self.recorder.connection_reset(request, first)
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=_AsyncClosing(response.stream, fresh),
                extensions=response.extensions,
            )
