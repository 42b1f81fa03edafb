"""Correctness parity: the server's greedy tokens and logprobs match a reference run on the same model folder,
Hugging Face transformers and vLLM's offline `LLM` class, for the base model and a LoRA adapter.

A few fixed texts, tokenized by the server's /tokenize, are continued greedily for `MAX_TOKENS` tokens on both
sides (EOS ignored) with the `TOP_LOGPROBS` likeliest tokens at each position, and compared by vLLM's rule
(parity.py: a first differing token must be a near tie, among the other side's top logprobs; agreeing tokens'
logprobs within `parity.LOGPROB_TOLERANCE` in float32). Each reference loads the model again, in a child
process: the checks run only with --vllm-parity (marker `vllm_parity`). They need the model's folder: a launched
server's model, or for a server at a URL (--vllm-url) the `root` /v1/models lists, a folder on this machine; a
hub id, or a root that is no local folder, leaves them unsupported. The references run at the launched server's
--dtype, or at a URL at the model config's dtype. The tolerance applies where the server runs float32: launched
with --dtype float32, or at a URL (which does not say its dtype, and vLLM's `--dtype auto` downcasts a float32
model) where its prompt logprobs of the reference's tokens agree with a float32 reference within it.
"""

import json
from pathlib import Path

import pytest

from pytest_vllm import parity
from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.outcomes import Unsupported
from pytest_vllm.verdicts import fingerprint

pytestmark = pytest.mark.vllm_parity

PROMPTS = ("Once upon a time", "The weather today is", "Write a list of three colors:", "Hello! How are you?")
MAX_TOKENS, TOP_LOGPROBS = 16, 5
OWN_PREFIX = "pytest-vllm-"  # adapters test_lora.py loads at runtime (perhaps in a parallel worker)


@pytest.fixture(scope="module")
def folder(vllm_server, vllm_http):
    """The local folder of the base model: the launched server's model, or the `root` /v1/models lists for it."""
    if vllm_server.launch_args:
        model = parity.served_model(vllm_server.launch_args)
        if model is None or not (Path(model) / "config.json").is_file():
            raise Unsupported(
                f"unsupported: a reference needs the model's local folder, and the server serves {model!r}, not a "
                "folder with a config.json; launch it on the model's folder (e.g. its hub snapshot) to compare it"
            )
        return Path(model)
    response = vllm_http.get("/v1/models")
    answered_ok(response, "/v1/models")
    root = next((entry.get("root") for entry in response.json()["data"] if entry["id"] == vllm_server.model), None)
    if not root or not (Path(root) / "config.json").is_file():
        raise Unsupported(
            f"unsupported: a reference needs the model's local folder, and /v1/models gives the root of "
            f"{vllm_server.model!r} as {root!r}, not a folder on this machine with a config.json; serve the model from "
            "its folder here (e.g. its hub snapshot), or launch it with --vllm-model, to compare it"
        )
    return Path(root)


@pytest.fixture(scope="module")
def dtype(vllm_server, folder):
    """The dtype the references run at: the launched server's --dtype, else the model config's own."""
    if vllm_server.launch_args:
        return parity.dtype_of(vllm_server.launch_args)
    config = json.loads((folder / "config.json").read_text())
    return config.get("dtype") or config.get("torch_dtype") or "auto"


@pytest.fixture(scope="module")
def prompts(vllm, vllm_server, vllm_http):
    """`PROMPTS` as token ids, by the server's /tokenize (what both sides are given)."""
    for capability in ("completions", "logprobs", "tokenize", "vllm_sampling"):
        vllm.require(vllm_server, capability)
    return parity.tokenized(vllm_http, vllm_server.model, PROMPTS)


@pytest.fixture(scope="module", params=["base", "lora"])
def model(request, vllm, vllm_server, vllm_http):
    """(the model to request, its LoRA adapter's folder or None): the base model, or the first adapter the
    server lists (by name)."""
    if request.param == "base":
        return vllm_server.model, None
    vllm.require(vllm_server, "lora")
    response = vllm_http.get("/v1/models")
    answered_ok(response, "/v1/models")
    adapters = sorted(
        (entry["id"], entry.get("root"))
        for entry in response.json()["data"]
        if entry.get("parent") and not entry["id"].startswith(OWN_PREFIX)
    )
    if not adapters:
        raise Unsupported("unsupported: the server lists no LoRA adapter of its own (an entry with a `parent`)")
    name, root = adapters[0]
    if not root or not (Path(root) / "adapter_config.json").is_file():
        raise Unsupported(
            f"unsupported: a reference needs adapter {name!r}'s local folder, and /v1/models gives its root as "
            f"{root!r}, not a folder with an adapter_config.json"
        )
    return name, Path(root)


@pytest.fixture(scope="module")
def served(vllm_http, model, prompts):
    """The server's greedy samples of `prompts` by `model`."""
    return parity.served(vllm_http, model[0], prompts, MAX_TOKENS, TOP_LOGPROBS)


def _scores_as_float32(http, model, prompts, expected):
    """Whether the server's prompt logprobs of each reference continuation (`expected`, run in float32) agree with
    the reference's logprobs within `parity.LOGPROB_TOLERANCE`: the server computes in float32."""
    for prompt, sample in zip(prompts, expected, strict=True):
        body = {"model": model, "prompt": [*prompt, *sample.tokens], "max_tokens": 1, "prompt_logprobs": 0}
        response = http.post("/v1/completions", json=body)
        if response.status_code != 200:
            return False
        scored = (response.json()["choices"][0].get("prompt_logprobs") or [])[len(prompt) :]
        if len(scored) != len(sample.tokens):
            return False
        for entry, token, logprob in zip(scored, sample.tokens, sample.logprobs, strict=True):
            value = (entry or {}).get(str(token), {}).get("logprob")
            if value is None or abs(value - logprob) > parity.LOGPROB_TOLERANCE:
                return False
    return True


def _tolerance(vllm_server, vllm_http, model, prompts, dtype, expected):
    """The logprob tolerance on agreeing tokens, and the references' dtype as the failure names it: by a launched
    server's --dtype; at a URL, only where the server's prompt logprobs show it runs float32 as the reference."""
    if vllm_server.launch_args:
        return parity.tolerance(dtype), dtype
    if parity.tolerance(dtype) is not None and _scores_as_float32(vllm_http, model, prompts, expected):
        return parity.tolerance(dtype), f"{dtype}, as the server's prompt logprobs of its tokens show the server runs"
    return None, f"{dtype}, the model config's; the server's own dtype is not known: tokens compared, not logprobs"


def _check_parity(engine, name, vllm_server, vllm_http, folder, dtype, model, prompts, served):
    try:
        expected = parity.reference(
            folder, prompts, MAX_TOKENS, TOP_LOGPROBS, engine=engine, lora_dir=model[1], dtype=dtype
        )
    except parity.ReferenceUnavailable as why:
        raise Unsupported(f"unsupported: {why}") from None
    tolerance, precision = _tolerance(vllm_server, vllm_http, model[0], prompts, dtype, expected)
    divergence = parity.compare(served, expected, tolerance, name)
    if divergence is not None:
        where = f"prompt {divergence.prompt}, position {divergence.position}"
        fingerprint(f"parts from {name} first at {where} (a {divergence.kind} beyond the rule)")
    adapter = f" with the adapter in {model[1]}" if model[1] else ""
    assert divergence is None, (
        f"{model[0]} on the server parts from {name} run on {folder}{adapter} ({precision}) at {divergence} "
        f"(the prompt: {PROMPTS[divergence.prompt]!r})"
    )


def test_greedy_tokens_match_transformers(vllm_server, vllm_http, folder, dtype, model, prompts, served):
    _check_parity("transformers", "transformers", vllm_server, vllm_http, folder, dtype, model, prompts, served)


def test_greedy_tokens_match_vllm_llm_class(vllm_server, vllm_http, folder, dtype, model, prompts, served):
    _check_parity("vllm", "vLLM's LLM class", vllm_server, vllm_http, folder, dtype, model, prompts, served)
