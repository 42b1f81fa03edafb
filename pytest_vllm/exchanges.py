"""Records each test's HTTP exchanges so a failure can show them and a curl line to repeat them.

The openai SDK and httpx clients the fixtures hand out share these event hooks, so every
request a check makes is recorded without the check doing anything.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

_BODY_LIMIT = 2000


@dataclass
class Exchange:
    method: str
    url: str
    request_body: str
    status: int | None = None
    response_body: str = ""
    response: httpx.Response | None = field(default=None, repr=False)
    authorized: bool = False

    def seconds(self) -> float:
        """How long the exchange took, to the end of the body (0 if it never finished)."""
        try:
            return self.response.elapsed.total_seconds() if self.response is not None else 0.0
        except RuntimeError:  # a stream that was never read to its end
            return 0.0

    def curl(self) -> str:
        """A one-line curl that repeats the request; the key is left as $VLLM_API_KEY."""
        line = shlex.join(["curl", "-sS", "-X", self.method, self.url])
        if self.authorized:
            line += ' -H "Authorization: Bearer $VLLM_API_KEY"'
        if self.request_body:
            line += " -H 'Content-Type: application/json' -d " + shlex.quote(self.request_body)
        return line

    def render(self) -> str:
        response = f"{self.status}" if self.status is not None else "no response"
        return (
            f"> {self.method} {self.url}\n{_clip(self.request_body)}\n"
            f"< {response}\n{_clip(self.response_body)}\n"
            f"repeat: {self.curl()}"
        )


class Recorder:
    """Holds the exchanges of the test that is running now."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.findings: list[dict] = []
        self._before: Exchange | None = None  # the last request of the checks before this one

    def reset(self) -> None:
        if self.exchanges:
            self._before = self.exchanges[-1]
        self.exchanges = []
        self.findings = []

    def connection_reset(self, request: httpx.Request, error: Exception) -> None:
        """A connection the server broke, answered once retried on a fresh connection."""
        before = self.exchanges[-2] if len(self.exchanges) > 1 else self._before
        self.findings.append(
            {
                "finding": "connection reset by the server, answered on a fresh connection",
                "request": f"{request.method} {request.url.path}",
                "error": type(error).__name__,
                "after": f"{before.method} {_path(before.url)} {_clip(before.request_body)[:300]}" if before else None,
            }
        )

    def seconds(self) -> float:
        """The summed time of this test's requests: the raw cost of what it checked."""
        return sum(exchange.seconds() for exchange in self.exchanges)

    def on_request(self, request: httpx.Request) -> None:
        body = request.content.decode(errors="replace") if _has_content(request) else ""
        authorized = "authorization" in request.headers
        self.exchanges.append(Exchange(request.method, str(request.url), body, authorized=authorized))

    def on_response(self, response: httpx.Response) -> None:
        if not _is_stream(response):
            response.read()
        self._finish(response)

    async def aon_request(self, request: httpx.Request) -> None:
        self.on_request(request)

    async def aon_response(self, response: httpx.Response) -> None:
        if not _is_stream(response):
            await response.aread()
        self._finish(response)

    def _finish(self, response: httpx.Response) -> None:
        for exchange in reversed(self.exchanges):
            if exchange.url == str(response.request.url) and exchange.status is None:
                exchange.status = response.status_code
                exchange.response = response
                exchange.response_body = "(an SSE stream)" if _is_stream(response) else response.text
                return

    def hooks(self) -> dict:
        return {"request": [self.on_request], "response": [self.on_response]}

    def async_hooks(self) -> dict:
        return {"request": [self.aon_request], "response": [self.aon_response]}


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def _is_stream(response: httpx.Response) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "")


def _has_content(request: httpx.Request) -> bool:
    import httpx

    try:
        return bool(request.content)
    except httpx.RequestNotRead:
        return False


def _clip(text: str) -> str:
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), ensure_ascii=False)
    return text if len(text) <= _BODY_LIMIT else text[:_BODY_LIMIT] + f"... ({len(text)} chars)"
