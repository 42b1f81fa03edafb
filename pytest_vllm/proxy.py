"""A fault-injecting HTTP proxy for a real vLLM server: every request and answer can be rewritten.

`FaultProxy(upstream)` runs in a background thread (its own asyncio loop, uvicorn for HTTP/1.1)
and forwards everything to `upstream`. `proxy.url(fault)` gives a base URL, on a port of its
own, whose traffic goes through `fault` (`None`: passed through untouched); several faults can
be served at once, each on its port, so their runs may overlap.

A `Fault` sees each exchange at three points:
- `request(req)`: rewrite what is sent (`req.json` is the parsed body, edited in place; `req.path`,
  `req.headers`), or return a `Response` to answer without asking the server;
- `response(req, resp)`: rewrite a whole (non-streamed) answer (`resp.status`, `resp.json`, `resp.body`);
- `event(req, payload)` / `frame(req, payload)` / `stream_end(req)`: a streamed answer (Server-Sent
  Events) is passed on event by event as it arrives (each held back `event_delay` seconds); `event`
  maps one `data:` payload to the payloads to send instead (none, one or several), `frame` writes one
  on the wire (the framing), `stream_end` adds raw bytes after the last one.
`req.ctx` is a dict for state kept along one exchange (e.g. across the events of one stream).

Only the standard library, httpx and uvicorn (which vLLM brings) are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

import httpx
import uvicorn

# Hop-by-hop headers and those the proxy recomputes (the body may change length).
_REQUEST_DROP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}
_RESPONSE_DROP = {"content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding"}
_UNSET: Any = object()


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return _UNSET


class _Message:
    """A body with a lazily parsed JSON view; edits to the view are written back by `encoded()`."""

    body: bytes

    def _init_body(self, body: bytes) -> None:
        self.body = body
        self._json: Any = _UNSET

    @property
    def json(self) -> Any:
        """The parsed JSON body (None if it is not JSON); edit it in place or assign a new value."""
        if self._json is _UNSET:
            self._json = _loads(self.body)
        return None if self._json is _UNSET else self._json

    @json.setter
    def json(self, value: Any) -> None:
        self._json = value
        self.body = json.dumps(value).encode()

    def encoded(self) -> bytes:
        if self._json is not _UNSET and self._json != _loads(self.body):
            self.body = json.dumps(self._json).encode()
        return self.body


class Request(_Message):
    """A client's request as the fault sees it."""

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.query, self.headers = method, path, query, headers
        self._init_body(body)
        self.ctx: dict[str, Any] = {}

    def fields(self) -> dict:
        """The JSON body if it is an object, else an empty dict (edits to which are not sent)."""
        return self.json if isinstance(self.json, dict) else {}


class Response(_Message):
    """An answer (from the server, or made up by the fault)."""

    def __init__(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.status = status
        self.headers = dict(headers or {})
        self._init_body(body)

    @classmethod
    def of_json(cls, status: int, value: Any) -> Response:
        response = cls(status, {"content-type": "application/json"})
        response.json = value
        return response


class Fault:
    """No change at all; faults override the hooks they need. The docstring says what bug it imitates."""

    name = "none"
    event_delay = 0.0  # seconds each streamed event is held back (a slow link or a buffering gateway)

    def request(self, req: Request) -> Response | None:
        return None

    def response(self, req: Request, resp: Response) -> Response:
        return resp

    def event(self, req: Request, payload: str) -> list[str]:
        return [payload]

    def frame(self, req: Request, payload: str) -> bytes:
        return f"data: {payload}\n\n".encode()

    def stream_end(self, req: Request) -> bytes:
        return b""


class FaultProxy:
    """Forwards to `upstream`; each `url(fault)` is a port of its own whose traffic `fault` rewrites."""

    def __init__(self, upstream: str, timeout: float = 300.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._client: httpx.AsyncClient | None = None
        self._listeners: list[tuple[Fault | None, str, uvicorn.Server, Future]] = []

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, fault: Fault | None = None) -> str:
        """The base URL whose traffic goes through `fault` (one listener per fault object)."""
        for known, url, _, _ in self._listeners:
            if known is fault:
                return url
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            self._app(fault or Fault()),
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            date_header=False,
            timeout_keep_alive=60,
        )
        server = uvicorn.Server(config)
        done = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), self._loop)
        while not server.started:
            if done.done():
                done.result()  # raises why it could not start
                raise RuntimeError("the fault proxy's listener stopped before it started")
            time.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._listeners.append((fault, url, server, done))
        return url

    def close(self) -> None:
        """Stop every listener, then the loop."""
        for _, _, server, _ in self._listeners:
            server.should_exit = True
        for _, _, _, done in self._listeners:
            with contextlib.suppress(Exception):  # closing: a listener that failed is gone either way
                done.result(timeout=10)
        self._listeners.clear()
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=10)
            self._client = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # The ASGI application, one per fault

    def _app(self, fault: Fault):
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            req = Request(
                scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers, b"".join(chunks)
            )
            resp = fault.request(req)
            if resp is None:
                await self._forward(fault, req, send)
            else:
                await _send_whole(send, resp)

        return app

    async def _forward(self, fault: Fault, req: Request, send) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(max_connections=64))
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _REQUEST_DROP}
        headers["accept-encoding"] = "identity"
        url = self.upstream + req.path + (f"?{req.query}" if req.query else "")
        body = req.encoded()
        upstream = self._client.build_request(req.method, url, headers=headers, content=body)
        try:
            answer = await self._client.send(upstream, stream=True)
        except httpx.HTTPError as error:
            await _send_whole(
                send, Response(502, {"content-type": "text/plain"}, f"fault proxy: upstream failed: {error!r}".encode())
            )
            return
        try:
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _RESPONSE_DROP}
            sse = answer.headers.get("content-type", "").startswith("text/event-stream")
            if not sse:
                resp = fault.response(req, Response(answer.status_code, kept, await answer.aread()))
                await _send_whole(send, resp)
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status_code,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept.items()],
                }
            )
            buffer = b""
            async for data in answer.aiter_bytes():
                buffer += data.replace(b"\r\n", b"\n")
                *events, buffer = buffer.split(b"\n\n")
                out = b"".join(_rewrite_event(fault, req, event) for event in events)
                if out and fault.event_delay:
                    await asyncio.sleep(fault.event_delay * len(events))
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            tail = (buffer + b"\n\n" if buffer.strip() else b"") + fault.stream_end(req)
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            await answer.aclose()


def _rewrite_event(fault: Fault, req: Request, event: bytes) -> bytes:
    text = event.decode()
    named, _, rest = text.partition("\n") if text.startswith("event: ") else ("", "", text)
    if not rest.startswith("data: ") or "\n" in rest:
        return event + b"\n\n"  # not a one-line data event (after its name): passed on as it came
    prefix = (named + "\n").encode() if named else b""  # the Responses and Messages APIs name each event
    return b"".join(prefix + fault.frame(req, payload) for payload in fault.event(req, rest[len("data: ") :]))


async def _send_whole(send, resp: Response) -> None:
    body = resp.encoded()
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in _RESPONSE_DROP}
    headers["content-length"] = str(len(body))
    await send(
        {
            "type": "http.response.start",
            "status": resp.status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
