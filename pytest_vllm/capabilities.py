"""Named server capabilities, each detected by one cheap probe request.

A check that needs a capability the server lacks ends as *unsupported*. A probe only
answers "absent" on the specific answer that means absent (a 404 route, vLLM's own
"not enabled" message); anything else unexpected is a ProbeError, so a broken feature
is never mistaken for a missing one.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Callable

from pytest_vllm.outcomes import Unsupported

if TYPE_CHECKING:
    import httpx

    from pytest_vllm.launchers import VllmServer

_PROBE_TOKENS = 1


class ProbeError(Exception):
    """A capability probe got an answer that means neither present nor absent."""


def _post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    return client.post(path, json=body)


def _absent_if(response: httpx.Response, statuses: tuple[int, ...], *fragments: str) -> bool:
    """True for 200, False for a listed status whose body mentions a fragment, else ProbeError."""
    if response.status_code == 200:
        return True
    text = response.text
    if response.status_code in statuses and (not fragments or any(f in text for f in fragments)):
        return False
    raise ProbeError(
        f"{response.request.method} {response.request.url.path} answered "
        f"{response.status_code}: {text[:300]}"
    )


def _completions(client: httpx.Client, model: str) -> bool:
    body = {"model": model, "prompt": "Hello", "max_tokens": _PROBE_TOKENS}
    return _absent_if(_post(client, "/v1/completions", body), (404,), "Not Found")


def _chat(client: httpx.Client, model: str) -> bool:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": _PROBE_TOKENS}
    return _absent_if(
        _post(client, "/v1/chat/completions", body), (400, 404), "Not Found", "chat template"
    )


def _logprobs(client: httpx.Client, model: str) -> bool:
    body = {"model": model, "prompt": "Hello", "max_tokens": _PROBE_TOKENS, "logprobs": 1}
    return _absent_if(_post(client, "/v1/completions", body), (400, 404), "logprobs", "Not Found")


def _tools(client: httpx.Client, model: str) -> bool:
    tool = {"type": "function", "function": {"name": "probe", "parameters": {"type": "object"}}}
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": [tool],
        "tool_choice": "auto",
        "max_tokens": _PROBE_TOKENS,
    }
    return _absent_if(
        _post(client, "/v1/chat/completions", body), (400, 404), "--enable-auto-tool-choice", "Not Found"
    )


def _lora(client: httpx.Client, model: str) -> bool:
    response = client.get("/v1/models")
    response.raise_for_status()
    return any(entry.get("parent") for entry in response.json()["data"])


def _lora_runtime(client: httpx.Client, model: str) -> bool:
    response = _post(client, "/v1/unload_lora_adapter", {"lora_name": "pytest-vllm-probe-absent"})
    if response.status_code in (404, 405) and response.json() == {"detail": "Not Found"}:
        return False
    if 400 <= response.status_code < 500:
        return True
    raise ProbeError(f"POST /v1/unload_lora_adapter answered {response.status_code}: {response.text[:300]}")


def _vision(client: httpx.Client, model: str) -> bool:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is this?"}]
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": _PROBE_TOKENS}
    return _absent_if(
        _post(client, "/v1/chat/completions", body),
        (400, 404),
        "Not Found",
        "not a multimodal",
        "not support",
        "At most 0 image",
        "chat template",
    )


def _embeddings(client: httpx.Client, model: str) -> bool:
    body = {"model": model, "input": "Hello"}
    return _absent_if(_post(client, "/v1/embeddings", body), (400, 404), "Not Found", "does not support")


def _auth(client: httpx.Client, model: str) -> bool:
    import httpx

    response = httpx.get(str(client.base_url.join("/v1/models")), timeout=client.timeout)
    if response.status_code in (200, 401):
        return response.status_code == 401
    raise ProbeError(f"GET /v1/models without a key answered {response.status_code}")


def _structured_outputs(client: httpx.Client, model: str) -> bool:
    body = {"model": model, "prompt": "Hello", "max_tokens": 2, "structured_outputs": {"choice": ["a", "b"]}}
    return _absent_if(_post(client, "/v1/completions", body), (400, 404), "structured", "Not Found")


CAPABILITIES: dict[str, tuple[str, Callable[[httpx.Client, str], bool]]] = {
    "completions": ("serves /v1/completions", _completions),
    "chat": ("serves /v1/chat/completions (the model has a chat template)", _chat),
    "logprobs": ("returns logprobs", _logprobs),
    "structured_outputs": ("enforces vLLM's structured_outputs constraints", _structured_outputs),
    "tools": ("parses tool calls (--enable-auto-tool-choice --tool-call-parser)", _tools),
    "lora": ("serves LoRA adapters (--enable-lora --lora-modules)", _lora),
    "lora_runtime": ("loads adapters at runtime (VLLM_ALLOW_RUNTIME_LORA_UPDATING)", _lora_runtime),
    "vision": ("accepts image content parts (a vision-language model)", _vision),
    "embeddings": ("serves /v1/embeddings (a pooling model)", _embeddings),
    "auth": ("requires an API key on /v1 (--api-key)", _auth),
}


def has(server: VllmServer, client: httpx.Client, name: str, overrides: dict[str, bool]) -> bool:
    """Whether `server` has capability `name`: an override, else a probe cached on the server."""
    if name in overrides:
        return overrides[name]
    if name not in server.capabilities:
        server.capabilities[name] = CAPABILITIES[name][1](client, server.model)
    return server.capabilities[name]


def require(server: VllmServer, client: httpx.Client, name: str, overrides: dict[str, bool]) -> None:
    """Raise Unsupported unless `server` has capability `name`."""
    if not has(server, client, name, overrides):
        raise Unsupported(f"unsupported: {server.model} at {server.base_url} lacks '{name}' "
                          f"({CAPABILITIES[name][0]})")
