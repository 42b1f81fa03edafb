"""API keys (`--api-key` / VLLM_API_KEY): /v1 needs the key, and which other paths stay open.

vLLM documents that the key guards only the `/v1`, `/v2` and `/inference` prefixes (the
`--api-key` help); /health, /version, /metrics and /tokenize stay open. A server that needs
no key makes these checks unsupported, and so does one without vLLM's own routes for the
open paths. The key itself is never printed.
"""

import dataclasses
import secrets

import openai
import pytest

from pytest_vllm.checks.openapi import validate

ENDPOINTS = {
    "models": ("GET", "/v1/models", None, "data"),
    "chat": (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2},
        "choices",
    ),
    "completions": ("POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 2}, "choices"),
}
OPEN_PATHS = {
    "health": ("GET", "/health", None),
    "version": ("GET", "/version", None),
    "metrics": ("GET", "/metrics", None),
    "tokenize": ("POST", "/tokenize", {"prompt": "Hello"}),
}
CAPABILITY = "auth"  # `server` requires an API key (the embedded default launches a keyed copy)


@pytest.fixture(scope="module")
def wrong_key():
    return "pytest-vllm-wrong-" + secrets.token_hex(8)


def _client(vllm, server, api_key):
    """An httpx client for `server` sending `api_key` (None: no Authorization header)."""
    return vllm.http(server, api_key)


def _send(client, server, method: str, path: str, fields: dict | None):
    body = None if fields is None else {"model": server.model, **fields}
    return client.request(method, path, json=body)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("key", ["no-key", "wrong-key"])
def test_without_the_right_key_is_401(vllm, server, wrong_key, endpoint, key):
    method, path, fields, _ = ENDPOINTS[endpoint]
    with _client(vllm, server, None if key == "no-key" else wrong_key) as client:
        response = _send(client, server, method, path, fields)
    assert response.status_code == 401, (
        f"{method} {path} with {key.replace('-', ' ')} must be refused with 401 Unauthorized "
        f"(the server's API key guards /v1); got {response.status_code}: {response.text[:200]}"
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_with_the_right_key_is_200(vllm, server, endpoint):
    method, path, fields, listing = ENDPOINTS[endpoint]
    if endpoint != "models":
        vllm.require(server, endpoint)
    with _client(vllm, server, server.api_key) as client:
        response = _send(client, server, method, path, fields)
    assert response.status_code == 200, (
        f"{method} {path} with the server's key must be served; got {response.status_code}: {response.text[:200]}"
    )
    assert isinstance(response.json().get(listing), list), (
        f"{method} {path} answered 200 without its `{listing}` list: {response.text[:200]}"
    )


def test_unauthorized_body_has_openai_error_shape(vllm, server):
    with _client(vllm, server, None) as client:
        response = client.get("/v1/models")
    assert response.status_code == 401
    validate(response.json(), "ErrorResponse")


def test_sdk_raises_authentication_error(vllm, server, wrong_key):
    client = vllm.openai(dataclasses.replace(server, api_key=wrong_key))
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    client.close()


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_path_open_without_a_key(vllm, server, path, record_property):
    method, url, fields = OPEN_PATHS[path]
    vllm.require(server, path)
    with _client(vllm, server, None) as client:
        response = _send(client, server, method, url, fields)
    record_property("open_without_key", response.status_code == 200)
    assert response.status_code == 200, (
        f"vLLM's --api-key guards only /v1, /v2 and /inference, so {method} {url} stays open "
        f"without a key; got {response.status_code}: {response.text[:200]}"
    )
