"""Probes that do not hinge on the model or the release.

The vision probe on a text-only server that pastes image URLs into the prompt as text (as llama.cpp's
server does with some chat templates): a 400 for the prompt's length is not taken as a broken server;
the probe asks again with a small image, and the server is judged to lack vision. Older vLLM releases
answer "The model does not support Completions API" with a 200 and an error body, and lack routes
later ones have (a 404): both are absent capabilities, not a server that erred nor one that has them."""

import json

import httpx
import pytest

from pytest_vllm.capabilities import CAPABILITIES, Probe, _vision, has
from pytest_vllm.launchers import VllmServer
from pytest_vllm.outcomes import ProbeError

CONTEXT = 1024


def pasting_server(request: httpx.Request) -> httpx.Response:
    """A text-only chat server: every part of a message is text, a data URL's characters are tokens."""
    content = json.loads(request.content)["messages"][0]["content"]
    tokens = sum(len(part.get("text") or part["image_url"]["url"]) for part in content)
    if tokens > CONTEXT:
        return httpx.Response(400, json={"error": {"message": f"Requested tokens ({tokens}) exceed context window"}})
    choice = {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}
    return httpx.Response(200, json={"choices": [choice], "usage": {"prompt_tokens": tokens}})


def probe(handler) -> Probe:
    server = VllmServer("http://server", "model", ["model"], "", "remote")
    client = httpx.Client(base_url=server.base_url, transport=httpx.MockTransport(handler))
    return Probe(server, client, has=lambda capability: False)


def old_vllm(request: httpx.Request) -> httpx.Response:
    """An embedding model on vLLM 0.10: /version, a 200 error body for generation, no chat batch route."""
    if request.url.path == "/version":
        return httpx.Response(200, json={"version": "0.10.0"})
    if request.url.path in ("/v1/completions", "/v1/chat/completions"):
        error = {"message": "The model does not support Completions API", "type": "BadRequestError", "code": 400}
        return httpx.Response(200, json={"error": error})
    if request.url.path == "/v1/embeddings":
        return httpx.Response(200, json={"object": "list", "data": [{"embedding": [0.1], "index": 0}]})
    return httpx.Response(404, json={"detail": "Not Found"})


@pytest.mark.parametrize(
    ("capability", "present"), [("completions", False), ("chat", False), ("embeddings", True), ("chat_batch", False)]
)
def test_an_older_release_is_probed_by_effect(capability, present):
    server = VllmServer("http://server", "model", ["model"], "", "remote")
    client = httpx.Client(base_url=server.base_url, transport=httpx.MockTransport(old_vllm))
    assert capability in CAPABILITIES and has(server, client, capability, {}) is present


def test_a_server_pasting_the_image_as_text_lacks_vision():
    assert _vision(probe(pasting_server)) is False


def test_another_400_is_still_a_probe_error():
    def broken(request):
        return httpx.Response(400, json={"error": {"message": "invalid image_url"}})

    with pytest.raises(ProbeError, match="invalid image_url"):
        _vision(probe(broken))
