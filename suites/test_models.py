"""GET /v1/models: OpenAI's list shape, the served ids, and vLLM's extras."""

import pytest

from pytest_vllm.checks.openapi import validate


def test_models_list_matches_openai_schema(vllm_http):
    response = vllm_http.get("/v1/models")
    assert response.status_code == 200
    validate(response.json(), "ListModelsResponse")


def test_models_list_includes_the_model_under_test(vllm_openai, vllm_server):
    ids = [model.id for model in vllm_openai.models.list()]
    assert vllm_server.model in ids, f"/v1/models lists {ids}, not {vllm_server.model!r}"
    assert len(ids) == len(set(ids)), f"/v1/models lists an id twice: {ids}"


@pytest.mark.vllm_requires("model_extras")
def test_model_entries_carry_vllm_extras(vllm_http, vllm_server):
    entries = {entry["id"]: entry for entry in vllm_http.get("/v1/models").json()["data"]}
    entry = entries[vllm_server.model]
    assert entry["owned_by"], "owned_by should name the owner (vLLM says 'vllm')"
    assert isinstance(entry.get("max_model_len"), int) and entry["max_model_len"] > 0, (
        f"vLLM's model entries carry a positive max_model_len, got {entry.get('max_model_len')!r}"
    )
    assert entry.get("parent") is None, "the base model has no parent (only LoRA adapters do)"
