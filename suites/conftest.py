"""Fixtures the suites share: the length rule of the server under test, whitespace to forbid where a
constrained output was cut by its budget, and a module's own server.

A module that checks a dedicated server names its capability in `CAPABILITY`; `server` and
`http` are then that server and an httpx client on it.
"""

import re

import pytest

from pytest_vllm.checks.expect import answered_ok

WHITESPACE = (" ", "  ", "\n", "\n\n", "\t", "\r")


@pytest.fixture
def ignore_eos(vllm, vllm_server):
    """Whether the answers run to max_tokens: vLLM's `ignore_eos` is sent where it is honoured."""
    return vllm.has(vllm_server, "vllm_sampling")


@pytest.fixture
def eos_fields(ignore_eos):
    """`{"ignore_eos": True}` where vLLM's ignore_eos is honoured (answers run to max_tokens), else {}."""
    return {"ignore_eos": True} if ignore_eos else {}


@pytest.fixture(scope="module")
def server(vllm, request):
    """The server for the module's `CAPABILITY` (`vllm.server_with`)."""
    return vllm.server_with(request.module.CAPABILITY)


@pytest.fixture(scope="module")
def http(vllm, server):
    """An httpx client on `server`, carrying its key."""
    client = vllm.http(server)
    yield client
    client.close()


@pytest.fixture
def whitespace_bias(vllm, vllm_server, vllm_http):
    """`whitespace_bias(text)`: logit_bias -100 on whitespace tokens, those of `text`'s whitespace runs
    and of the common ones, found with vLLM's /tokenize ({} where the server has none)."""
    if not vllm.has(vllm_server, "tokenize"):
        return lambda text: {}

    def bias(text):
        ids = set()
        for run in sorted(set(WHITESPACE) | set(re.findall(r"\s+", text))):
            body = {"model": vllm_server.model, "prompt": run, "add_special_tokens": False}
            response = vllm_http.post("/tokenize", json=body)
            answered_ok(response, "/tokenize")
            ids.update(response.json()["tokens"])
        return {str(token): -100 for token in sorted(ids)}

    return bias
