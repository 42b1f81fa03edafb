"""Correctness parity: a server's greedy tokens and logprobs against a reference run on the same model folder,
Hugging Face transformers or vLLM's offline `LLM` class, in a child process (parity_reference.py), never in
the pytest process.

Both sides continue the same token ids greedily for `max_tokens` tokens, EOS ignored, and give each token's
logprob and the top logprobs at each position. `compare` applies vLLM's own rule (`check_logprobs_close`
in vLLM's tests/models/utils.py): per prompt, walk the tokens; at the first position where they differ,
each side's token must be among the other side's top logprobs (a near tie decided the other way), and the
prompt is compared no further. It adds one rule of its own: where the tokens agree, their logprobs must
agree within `tolerance` (`LOGPROB_TOLERANCE` where the server runs float32; at any other dtype vLLM's rule
alone holds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.processes import stop_process_group

if TYPE_CHECKING:
    import httpx

ENGINES = ("transformers", "vllm")
# The largest |logprob difference| allowed on a token both sides chose, in float32. On tiny-chat (2 layers) the
# server is at most 4.8e-6 from transformers and from the LLM class, with or without a LoRA adapter (float32
# rounding in other kernels, unmerged vs merged LoRA weights); 1e-3, 200 times that, leaves room for a deep
# model's rounding, which grows with its layers, yet is far under what a wrong computation does to logprobs.
LOGPROB_TOLERANCE = 1e-3
REFERENCE_TIMEOUT = 900.0  # seconds a reference may take to load the model and generate
_DTYPE_ALIASES = {"half": "float16", "float": "float32"}  # vLLM's --dtype spellings
_OUTPUT_LINES = 30


@dataclass(frozen=True)
class Sample:
    """One prompt's greedy continuation: its tokens, each one's logprob, and the top logprobs at each position."""

    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    top: tuple[dict[int, float], ...]


@dataclass(frozen=True)
class Divergence:
    """Where the server first parts from the reference beyond the rule: prompt `prompt` (its index), token
    `position` of its continuation; `kind` is "token", "logprob" or "length"."""

    prompt: int
    position: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"prompt {self.prompt}, position {self.position}: {self.detail}"


class ReferenceFailed(Exception):
    """The reference did not give its samples; the message says what, why and what to do."""


class ReferenceUnavailable(ReferenceFailed):
    """The reference cannot run here: a package is missing, or the folder is not a model or adapter it reads."""


def served_model(launch_args: Sequence[str]) -> str | None:
    """The model a launched server serves: its `--model`, else the argument after `serve` (None if neither)."""
    model = launch_value(launch_args, "--model")
    if model is None and "serve" in launch_args[:-1]:
        model = launch_args[list(launch_args).index("serve") + 1]
    return model


def launch_value(launch_args: Sequence[str], option: str) -> str | None:
    """The value of `option` in a server's launch arguments (`--dtype float32` or `--dtype=float32`; the last)."""
    value = None
    for index, arg in enumerate(launch_args):
        if arg == option and index + 1 < len(launch_args):
            value = launch_args[index + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def dtype_of(launch_args: Sequence[str]) -> str:
    """The `--dtype` a server was launched with, as torch names it (`auto` where it was not given)."""
    dtype = launch_value(launch_args, "--dtype") or "auto"
    return _DTYPE_ALIASES.get(dtype, dtype)


def tolerance(dtype: str) -> float | None:
    """The logprob tolerance on agreeing tokens at `dtype`: `LOGPROB_TOLERANCE` in float32, else none."""
    return LOGPROB_TOLERANCE if dtype == "float32" else None


def tokenized(http: httpx.Client, model: str, texts: Sequence[str]) -> list[list[int]]:
    """`texts` as the server's /tokenize gives their token ids (special tokens added, as a completion's prompt)."""
    prompts = []
    for text in texts:
        response = http.post("/tokenize", json={"model": model, "prompt": text})
        answered_ok(response, "/tokenize")
        prompts.append(response.json()["tokens"])
    return prompts


def served(http: httpx.Client, model: str, prompts: Sequence[list[int]], max_tokens: int, top: int) -> list[Sample]:
    """The server's greedy samples: /v1/completions of each prompt given as token ids, `max_tokens` long
    (ignore_eos), with `top` logprobs, tokens as ids (return_tokens_as_token_ids), no repetition penalty."""
    samples = []
    for index, prompt in enumerate(prompts):
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "logprobs": top,
            "ignore_eos": True,
            "repetition_penalty": 1.0,  # over a generation_config's default
            "return_tokens_as_token_ids": True,
        }
        response = http.post("/v1/completions", json=body)
        answered_ok(response, f"/v1/completions of prompt {index}")
        logprobs = response.json()["choices"][0]["logprobs"]
        samples.append(
            Sample(
                tuple(_token_id(token) for token in logprobs["tokens"]),
                tuple(logprobs["token_logprobs"]),
                tuple({_token_id(token): value for token, value in top.items()} for top in logprobs["top_logprobs"]),
            )
        )
    return samples


def _token_id(token: str) -> int:
    assert token.startswith("token_id:"), (
        f"return_tokens_as_token_ids=true names each logprobs token 'token_id:N', got {token!r}: "
        "without token ids the server's tokens cannot be compared with the reference's"
    )
    return int(token.removeprefix("token_id:"))


def reference(
    model_dir: str | Path,
    prompts: Sequence[list[int]],
    max_tokens: int,
    top_logprobs: int,
    *,
    engine: str = "transformers",
    lora_dir: str | Path | None = None,
    dtype: str = "auto",
    timeout: float = REFERENCE_TIMEOUT,
) -> list[Sample]:
    """The greedy samples of `engine` (transformers or vllm) on the model in `model_dir` (with the LoRA
    adapter in `lora_dir`) at `dtype`, computed in a child process."""
    if engine not in ENGINES:
        raise ValueError(f"unknown reference engine {engine!r}; choose from {ENGINES}")
    job = {
        "engine": engine,
        "model": str(model_dir),
        "lora": str(lora_dir) if lora_dir else None,
        "dtype": _DTYPE_ALIASES.get(dtype, dtype),
        "prompts": [list(prompt) for prompt in prompts],
        "max_tokens": max_tokens,
        "top_logprobs": top_logprobs,
    }
    with tempfile.TemporaryDirectory(prefix="pytest-vllm-parity-") as folder:
        job_path, result_path = Path(folder) / "job.json", Path(folder) / "result.json"
        job_path.write_text(json.dumps(job))
        output = _run_child(engine, job_path, result_path, timeout)
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            raise ReferenceFailed(_failure(engine, "wrote no result", output)) from None
    if "unavailable" in result:
        raise ReferenceUnavailable(result["unavailable"])
    return [
        Sample(
            tuple(sample["tokens"]),
            tuple(sample["logprobs"]),
            tuple(dict(top) for top in sample["top"]),
        )
        for sample in result["samples"]
    ]


def _run_child(engine: str, job: Path, result: Path, timeout: float) -> str:
    """Run the reference's child in a process group of its own (vLLM starts an engine process) and return
    its output; a failure or a run past `timeout` stops the group and raises ReferenceFailed."""
    package_root = str(Path(__file__).resolve().parent.parent)  # the child imports this very code
    env = {
        "HF_HUB_OFFLINE": "1",  # the model is a local folder: nothing to download
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB: a few short sequences (vLLM's CPU default is 4)
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_vllm.parity_reference", str(job), str(result)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(process.pid)
        output, _ = process.communicate()
        raise ReferenceFailed(
            _failure(engine, f"did not finish in {timeout:.0f} s (a larger model needs a longer timeout)", output)
        ) from None
    finally:
        stop_process_group(process.pid, grace=5)  # an engine process it left behind
    if process.returncode != 0:
        raise ReferenceFailed(_failure(engine, f"exited with code {process.returncode}", output))
    return output


def _failure(engine: str, what: str, output: str) -> str:
    lines = output.strip().splitlines()[-_OUTPUT_LINES:] or ["(no output)"]
    tail = "\n".join(lines)
    return (
        f"The {engine} reference {what}: {lines[-1].strip()}\n"
        f"To see it run by itself: python -m pytest_vllm.parity_reference JOB.json RESULT.json (parity_reference.py "
        f"says what JOB holds).\nLast lines of its output:\n{tail}"
    )


def compare(
    server: Sequence[Sample], reference: Sequence[Sample], tolerance: float | None, name: str = "the reference"
) -> Divergence | None:
    """The first place where the server's samples part from `reference`'s (`name`) beyond the rule (see the
    module's docstring), or None; `tolerance` bounds |Δlogprob| on agreeing tokens (None: not compared)."""
    if len(server) != len(reference):
        raise ValueError(
            f"{len(server)} server samples for {len(reference)} reference samples: give both the same prompts"
        )
    for prompt, (ours, theirs) in enumerate(zip(server, reference, strict=True)):
        for position, (mine, its) in enumerate(zip(ours.tokens, theirs.tokens, strict=False)):
            agreed = f"after {list(ours.tokens[:position])}"
            if mine != its:
                if mine in theirs.top[position] and its in ours.top[position]:
                    break  # a near tie decided the other way: the continuations part here, legitimately
                return Divergence(
                    prompt,
                    position,
                    "token",
                    f"{agreed} the server chose token {mine} and {name} {its}, and they are not each among the "
                    f"other's top {len(theirs.top[position])} logprobs (server: {_top(ours, position)}; "
                    f"{name}: {_top(theirs, position)})",
                )
            difference = abs(ours.logprobs[position] - theirs.logprobs[position])
            if tolerance is not None and difference > tolerance:
                return Divergence(
                    prompt,
                    position,
                    "logprob",
                    f"{agreed} both chose token {mine}, with logprob {ours.logprobs[position]:.6f} on the server "
                    f"and {theirs.logprobs[position]:.6f} in {name}: {difference:.1e} apart, over the tolerance "
                    f"{tolerance:.0e}",
                )
        else:
            if len(ours.tokens) != len(theirs.tokens):
                return Divergence(
                    prompt,
                    min(len(ours.tokens), len(theirs.tokens)),
                    "length",
                    f"the server gave {len(ours.tokens)} tokens and {name} {len(theirs.tokens)} (both should give "
                    "max_tokens, EOS ignored)",
                )
    return None


def _top(sample: Sample, position: int) -> str:
    return ", ".join(f"{token}: {value:.4f}" for token, value in sample.top[position].items())
