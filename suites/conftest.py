"""Fixtures the suites share: the length rule of the server under test, and a module's own server.

A module that checks a dedicated server names its capability in `CAPABILITY`; `server` and
`http` are then that server and an httpx client on it.
"""

import pytest


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
