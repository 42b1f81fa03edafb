"""Liveness and identity: /health, /ping, /version."""

import re

import pytest


@pytest.mark.vllm_requires("health")
def test_health_is_200_with_empty_body(vllm_http):
    response = vllm_http.get("/health")
    assert response.status_code == 200, (
        f"vLLM answers GET /health with 200 while the engine is alive, got {response.status_code}"
    )
    assert response.content == b"", f"/health body should be empty, got {response.text[:200]!r}"


@pytest.mark.vllm_requires("ping")
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_ping_is_200(vllm_http, method):
    response = vllm_http.request(method, "/ping")
    assert response.status_code == 200, f"{method} /ping answered {response.status_code}"


@pytest.mark.vllm_requires("version")
def test_version_is_a_version_string(vllm_http):
    response = vllm_http.get("/version")
    assert response.status_code == 200
    version = response.json().get("version")
    assert isinstance(version, str) and re.match(r"^\d+\.\d+", version), (
        f"/version should answer {{'version': 'X.Y...'}}, got {response.text[:200]!r}"
    )
