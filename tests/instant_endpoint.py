"""An OpenAI-style completions server with known, injected latencies, to check pytest_vllm.perf against.

It streams `max_tokens` tokens, `tokens_per_chunk` a chunk, in OpenAI's SSE format (chunked HTTP/1.1,
keep-alive): `ttft` seconds before the first chunk (`slow_ttft` for every `slow_every`-th request),
`itl` between chunks, then a usage chunk and `[DONE]`; without `stream` it answers once after the same total time.
Every `fail_every`-th request is answered 500; with `max_parallel`, at most that many are answered at
once (the others queue). /tokenize and /detokenize answer as vLLM's do (unless `tokenize` is off).
Requests are counted from 1, warm-ups included; `bodies` and `arrivals` (perf_counter) record them.

In tests: `with InstantEndpoint(ttft=0.05, itl=0.01) as endpoint: ... endpoint.url ...` (its own thread
and event loop). Standalone, for benchmarks: `python tests/instant_endpoint.py --ttft 0 --itl 0` prints
its URL, then serves until killed (on uvloop when it is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import threading
import time
from typing import Any

MAX_MODEL_LEN = 4096
CHAT_TEMPLATE_TOKENS = 5  # what the pretend chat template adds to a prompt


class InstantEndpoint:
    def __init__(
        self,
        ttft: float = 0.0,
        itl: float = 0.0,
        *,
        tokens_per_chunk: int = 1,
        slow_every: int = 0,
        slow_ttft: float = 0.0,
        fail_every: int = 0,
        max_parallel: int = 0,
        tokenize: bool = True,
        api_key: str | None = None,
    ) -> None:
        self.ttft, self.itl = ttft, itl
        self.tokens_per_chunk = tokens_per_chunk
        self.slow_every, self.slow_ttft = slow_every, slow_ttft
        self.fail_every = fail_every
        self.max_parallel = max_parallel
        self.tokenize = tokenize
        self.api_key = api_key
        self.count = 0
        self.bodies: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._parallel: asyncio.Semaphore | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen (in the running loop); `url` says where."""
        self._parallel = asyncio.Semaphore(self.max_parallel) if self.max_parallel else None
        self._server = await asyncio.start_server(self._connection, host, port)
        self.url = f"http://{host}:{self._server.sockets[0].getsockname()[1]}"

    def __enter__(self) -> InstantEndpoint:
        loop = self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="instant-endpoint", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the instant endpoint did not start within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop and self._thread and self._server
        server = self._server

        async def stop() -> None:
            server.close()
            for handler in self._handlers:
                handler.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler
        self._handlers.add(handler)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                await self._answer(request_line.split()[1], headers, json.loads(body or b"{}"), writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client closed the connection, or the endpoint stops (ending normally keeps asyncio quiet)
        finally:
            writer.close()
            self._handlers.discard(handler)

    async def _answer(self, path: str, headers: dict[str, str], body: dict[str, Any], writer: Any) -> None:
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return await _reply(writer, 401, {"error": {"message": "wrong or missing API key"}})
        if path == "/tokenize" and self.tokenize:
            tokens = list(range(100, 100 + len(str(body["prompt"]).split())))
            return await _reply(writer, 200, {"tokens": tokens, "count": len(tokens), "max_model_len": MAX_MODEL_LEN})
        if path == "/detokenize" and self.tokenize:
            return await _reply(writer, 200, {"prompt": " ".join(f"w{t}" for t in body["tokens"])})
        if path not in ("/v1/completions", "/v1/chat/completions"):
            return await _reply(writer, 404, {"error": {"message": f"no route {path}"}})
        self.arrivals.append(time.perf_counter())
        self.bodies.append(body)
        self.count += 1
        number = self.count
        if self.fail_every and number % self.fail_every == 0:
            return await _reply(writer, 500, {"error": {"message": f"injected failure of request {number}"}})
        async with self._parallel or contextlib.nullcontext():
            await self._complete(number, path.endswith("chat/completions"), body, writer)

    async def _complete(self, number: int, chat: bool, body: dict[str, Any], writer: Any) -> None:
        ttft = self.slow_ttft if self.slow_every and number % self.slow_every == 0 else self.ttft
        tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        prompt = body["messages"][-1]["content"].split() if chat else body["prompt"]
        usage = {"prompt_tokens": len(prompt) + CHAT_TEMPLATE_TOKENS * chat, "completion_tokens": tokens}
        usage["total_tokens"] = usage["prompt_tokens"] + tokens
        if not body.get("stream"):
            await asyncio.sleep(ttft + self.itl * (tokens - 1))
            choice = {"message": {"role": "assistant", "content": "x" * tokens}} if chat else {"text": "x" * tokens}
            return await _reply(
                writer, 200, {"choices": [{"index": 0, **choice, "finish_reason": "length"}], "usage": usage}
            )
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        text = "x" * self.tokens_per_chunk
        delta = {"delta": {"content": text}} if chat else {"text": text}
        chunk = _event({"object": "chunk", "choices": [{"index": 0, **delta, "finish_reason": None}], "usage": None})
        await asyncio.sleep(ttft)
        for index in range(math.ceil(tokens / self.tokens_per_chunk)):
            if index and self.itl:
                await asyncio.sleep(self.itl)
            writer.write(chunk)
            if self.itl:
                await writer.drain()
        writer.write(
            _event({"object": "chunk", "choices": [], "usage": usage}) + _frame(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        )
        await writer.drain()


def _event(message: dict[str, Any]) -> bytes:
    return _frame(b"data: " + json.dumps(message).encode() + b"\n\n")


def _frame(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _reply(writer: Any, status: int, answer: dict[str, Any]) -> None:
    data = json.dumps(answer).encode()
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data
    )
    await writer.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first chunk")
    parser.add_argument("--itl", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    endpoint = InstantEndpoint(args.ttft, args.itl)

    async def serve() -> None:
        await endpoint.start(port=args.port)
        print(endpoint.url, flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
