"""The clients checks use: the openai SDK (sync and async) and httpx, for any server of the run.

Every client has a finite timeout and no retries (they would hide bugs), sends the server's key,
retries a connection the server broke once (connections.py) and records its exchanges for a
failure's report; `server_of` tells which server a client belongs to.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    from openai import AsyncOpenAI, OpenAI

    from pytest_vllm.exchanges import Recorder
    from pytest_vllm.launchers import VllmServer

_SERVER_KEY: Any = object()  # http()'s default: the server's own key


class Clients:
    """Makes the clients of one run and remembers whose they are."""

    def __init__(self, recorder: Recorder, request_timeout: float) -> None:
        self.recorder = recorder
        self.request_timeout = request_timeout
        self._servers: weakref.WeakKeyDictionary[Any, VllmServer] = weakref.WeakKeyDictionary()

    def openai(self, server: VllmServer) -> OpenAI:
        """An openai SDK client for `server`: no retries (they hide bugs), finite timeouts."""
        import httpx
        import openai

        from pytest_vllm.connections import RetryingTransport

        http = httpx.Client(
            timeout=self.request_timeout,
            event_hooks=self.recorder.hooks(),
            transport=RetryingTransport(self.recorder),
        )
        # openai>=3.6 types http_client as an httpx2.Client; an httpx.Client works (the same interface)
        return self._track(server, openai.OpenAI(**self._openai_args(server), http_client=http))  # type: ignore[arg-type, unused-ignore]

    def async_openai(self, server: VllmServer) -> AsyncOpenAI:
        import httpx
        import openai

        from pytest_vllm.connections import AsyncRetryingTransport

        http = httpx.AsyncClient(
            timeout=self.request_timeout,
            event_hooks=self.recorder.async_hooks(),
            transport=AsyncRetryingTransport(self.recorder),
        )
        # openai>=3.6 types http_client as an httpx2.AsyncClient; an httpx.AsyncClient works (the same interface)
        return self._track(server, openai.AsyncOpenAI(**self._openai_args(server), http_client=http))  # type: ignore[arg-type, unused-ignore]

    def http(self, server: VllmServer, api_key: Any = _SERVER_KEY, record: bool = True) -> httpx.Client:
        """An httpx client on the server's base URL for wire-level checks: with the server's
        key, or with `api_key` (None for no key at all); its exchanges recorded for a failure's report."""
        import httpx

        from pytest_vllm.checks.answers import install
        from pytest_vllm.connections import RetryingTransport
        from pytest_vllm.launchers import auth_headers

        hooks = self.recorder.hooks() if record else {"request": [], "response": []}
        client = httpx.Client(
            base_url=server.base_url,
            headers=auth_headers(server.api_key if api_key is _SERVER_KEY else api_key),
            timeout=self.request_timeout,
            event_hooks={**hooks, "response": [*hooks["response"], install]},
            transport=RetryingTransport(self.recorder),
        )
        return self._track(server, client)

    def _openai_args(self, server: VllmServer) -> dict[str, Any]:
        return {
            "base_url": server.base_url + "/v1",
            "api_key": server.api_key or "EMPTY",
            "max_retries": 0,
            "timeout": self.request_timeout,
        }

    def _track(self, server: VllmServer, client: Any) -> Any:
        self._servers[client] = server
        return client

    def server_of(self, value: Any) -> VllmServer | None:
        """The server a fixture value (a server or one of our clients) belongs to."""
        from pytest_vllm.launchers import VllmServer

        if isinstance(value, VllmServer):
            return value
        try:
            return self._servers.get(value)
        except TypeError:  # not weak-referenceable, so not one of ours
            return None
