"""Correctness parity (parity.py, suites/test_parity.py): vLLM's rule as `compare` applies it, the suite's
unsupported cases, and on real vLLM, tiny-chat and its adapter matching both references while a copy of its
folder with one weight changed is caught where it first parts from the server."""

import importlib.util
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from helpers import load_results, run_suites

from pytest_vllm import fixture_models, parity

TEXTS = ("Once upon a time", "The weather today is", "Write a list of three colors:", "Hello! How are you?")
MAX_TOKENS, TOP = 16, 5
# The inner run's own check beside the suite: it keeps the server's greedy samples of TEXTS on the base model.
KEEP_SAMPLES = f"""
import json, os
from pytest_vllm import parity

def test_keep_the_servers_samples(vllm_server, vllm_http):
    prompts = parity.tokenized(vllm_http, vllm_server.model, json.loads(os.environ["PARITY_TEXTS"]))
    samples = parity.served(vllm_http, vllm_server.model, prompts, {MAX_TOKENS}, {TOP})
    kept = [[s.tokens, s.logprobs, [list(top.items()) for top in s.top]] for s in samples]
    with open(os.environ["PARITY_SAMPLES"], "w") as file:
        json.dump({{"prompts": prompts, "samples": kept}}, file)
"""


def sample(tokens, logprobs=None, top=None):
    """A Sample whose top logprobs hold its own token, and the extra (token, logprob) pairs of `top`."""
    logprobs = logprobs or [-0.5] * len(tokens)
    extra = top or {}
    tops = [
        {token: value, **dict(extra.get(index, []))}
        for index, (token, value) in enumerate(zip(tokens, logprobs, strict=True))
    ]
    return parity.Sample(tuple(tokens), tuple(logprobs), tuple(tops))


def test_identical_samples_match():
    assert parity.compare([sample([1, 2, 3]), sample([4, 5])], [sample([1, 2, 3]), sample([4, 5])], 1e-3) is None


def test_a_near_tie_decided_the_other_way_ends_the_prompts_comparison():
    """Each side's token is among the other's top logprobs: the continuations part legitimately, and what follows
    (other tokens, other logprobs, another length) is not compared."""
    server = sample([1, 2, 7, 8], top={2: [(9, -0.6)]})
    reference = sample([1, 2, 9, 3, 4], logprobs=[-0.5, -0.5, -0.5, -4.0, -4.0], top={2: [(7, -0.6)]})
    assert parity.compare([server], [reference], 1e-3) is None


def test_a_token_outside_the_others_top_logprobs_is_named_with_its_prompt_and_position():
    server = [sample([1, 2, 3]), sample([4, 5, 6, 7])]
    reference = [sample([1, 2, 3]), sample([4, 5, 9, 7], top={2: [(6, -2.0)]})]
    divergence = parity.compare(server, reference, 1e-3, "transformers")
    assert (divergence.prompt, divergence.position, divergence.kind) == (1, 2, "token")
    assert str(divergence).startswith("prompt 1, position 2: after [4, 5] the server chose token 6 and transformers 9")


def test_a_logprob_beyond_the_tolerance_is_named_and_none_compares_tokens_only():
    server, reference = [sample([1, 2, 3], [-0.5, -0.5, -0.5])], [sample([1, 2, 3], [-0.5, -0.502, -0.5])]
    divergence = parity.compare(server, reference, 1e-3)
    assert (divergence.prompt, divergence.position, divergence.kind) == (0, 1, "logprob")
    assert "2.0e-03 apart, over the tolerance 1e-03" in divergence.detail
    assert parity.compare(server, reference, None) is None


def test_a_shorter_continuation_is_named_where_it_ends():
    divergence = parity.compare([sample([1, 2])], [sample([1, 2, 3])], 1e-3)
    assert (divergence.prompt, divergence.position, divergence.kind) == (0, 2, "length")


@pytest.mark.parametrize(
    ("args", "model", "dtype"),
    [
        (
            ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--dtype", "float32"],
            "/m",
            "float32",
        ),
        (["vllm", "serve", "/m", "--port", "8000", "--dtype=half"], "/m", "float16"),
        (["docker", "run", "-v", "/m:/m:ro", "image", "--model=/m"], "/m", "auto"),
        (["vllm", "serve"], None, "auto"),
    ],
)
def test_the_model_and_dtype_come_from_the_launch_args(args, model, dtype):
    assert parity.served_model(args) == model and parity.dtype_of(args) == dtype


def test_a_folder_that_is_not_a_model_is_refused_saying_why(tmp_path):
    with pytest.raises(parity.ReferenceUnavailable) as refused:
        parity.reference(tmp_path, [[1, 2]], 2, 1, timeout=120)
    missing = [name for name in ("torch", "transformers", "safetensors") if importlib.util.find_spec(name) is None]
    expected = (
        "not installed for" if missing else f"{tmp_path} is not a Hugging Face model folder (it has no config.json)"
    )
    assert expected in str(refused.value)


def _unsupported_reason(tmp_path: Path, *target: str) -> str:
    """The one reason the parity suite's 4 checks give, all unsupported, on `target` (its options)."""
    report = tmp_path / "report.json"
    args = (*target, "--vllm-parity", "--vllm-report", str(report))
    done = run_suites(*args, cwd=tmp_path, timeout=120, module="parity")
    output = done.stdout + done.stderr
    checks = load_results(report, output)["checks"]
    assert len(checks) == 4 and {c["outcome"] for c in checks} == {"unsupported"}, output
    [reason] = {c["reason"] for c in checks}
    return reason


def test_a_server_at_a_url_whose_root_is_not_a_local_folder_is_unsupported(fake_server, tmp_path):
    reason = _unsupported_reason(tmp_path, "--vllm-url", fake_server, "--vllm-api-key", "sekrit-key-123")
    assert "/v1/models gives the root of 'served-a' as None, not a folder on this machine with a config.json" in reason


def test_a_model_that_is_not_a_local_folder_is_unsupported(fake_command, tmp_path):
    reason = _unsupported_reason(tmp_path, "--vllm-command", fake_command, "--vllm-model", "org/hub-model")
    assert "the server serves 'org/hub-model', not a folder with a config.json" in reason


@pytest.fixture(scope="module")
def run(real_vllm_turn, tmp_path_factory):
    """The suite on the embedded default (tiny-chat and its adapters) with --vllm-parity, and beside it on the same
    server a check keeping the server's greedy samples of TEXTS: (results, the prompts' ids, the samples)."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed in this environment")
    folder = tmp_path_factory.mktemp("parity")
    (folder / "test_keep.py").write_text(KEEP_SAMPLES)
    report, kept = folder / "report.json", folder / "samples.json"
    env = {**os.environ, "PARITY_TEXTS": json.dumps(TEXTS), "PARITY_SAMPLES": str(kept)}
    args = (str(folder / "test_keep.py"), "--vllm-parity", "--vllm-report", str(report))
    done = run_suites(*args, cwd=folder, timeout=1800, env=env, module="parity")
    results = load_results(report, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    data = json.loads(kept.read_text())
    samples = [
        parity.Sample(tuple(tokens), tuple(values), tuple(dict(top) for top in tops))
        for tokens, values, tops in data["samples"]
    ]
    return results, data["prompts"], samples


def test_tiny_chat_and_its_adapter_match_transformers_and_the_llm_class(run):
    results, _, _ = run
    outcomes = {check["id"].split("::")[-1]: check["outcome"] for check in results["checks"]}
    expected = {
        f"test_greedy_tokens_match_{engine}[{model}]": "passed"
        for engine in ("transformers", "vllm_llm_class")
        for model in ("base", "lora")
    }
    assert {name: outcomes.get(name) for name in expected} == expected, results["checks"]


def _zero_row(weights: Path, tensor: str, row: int) -> None:
    """Zero row `row` of float32 matrix `tensor` in the safetensors file `weights`, in place (no torch here)."""
    with open(weights, "r+b") as file:
        (size,) = struct.unpack("<Q", file.read(8))
        entry = json.loads(file.read(size))[tensor]
        assert entry["dtype"] == "F32", entry
        width = entry["shape"][1] * 4
        file.seek(8 + size + entry["data_offsets"][0] + row * width)
        file.write(bytes(width))


def _first_new_token(prompts, served):
    """(k, token): the first token of prompt 1's continuation from position 1 on that no prompt, no token of
    prompt 0's continuation and none before it in prompt 1's holds."""
    seen = {token for prompt in prompts for token in prompt} | set(served[0].tokens) | {served[1].tokens[0]}
    for position, token in enumerate(served[1].tokens[1:], start=1):
        if token not in seen:
            return position, token
        seen.add(token)
    pytest.fail(f"every token of prompt 1's continuation came before it: {served}")


def test_a_changed_weight_is_caught_where_it_first_matters(run, tmp_path):
    """Zero the embedding row of a token the server first chooses at prompt 1, position k >= 1 (tiny-chat ties it
    to the output layer): before it, every logit but that token's own is unchanged, and its logit of 0 is no
    position's greatest, so the greedy tokens agree; at k it falls out of the top logprobs. vLLM's rule names
    exactly (1, k); with the logprob tolerance the first divergence is there or earlier (the token's changed
    logit moves the others' logprobs a little)."""
    _, prompts, served = run
    position, token = _first_new_token(prompts, served)
    changed = tmp_path / "tiny-chat-changed"
    shutil.copytree(fixture_models.build("tiny-chat"), changed)
    _zero_row(changed / "model.safetensors", "model.embed_tokens.weight", token)
    reference = parity.reference(changed, prompts, MAX_TOKENS, TOP, dtype="float32")

    divergence = parity.compare(served, reference, None, "transformers")
    assert (divergence.prompt, divergence.position, divergence.kind) == (1, position, "token"), divergence
    assert (
        f"prompt 1, position {position}: after {list(served[1].tokens[:position])} the server chose token {token}"
        in str(divergence)
    )
    first = parity.compare(served, reference, parity.LOGPROB_TOLERANCE, "transformers")
    assert (first.prompt, first.position) <= (1, position), first
