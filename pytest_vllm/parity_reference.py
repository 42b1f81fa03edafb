"""The reference's child process: ``python -m pytest_vllm.parity_reference JOB RESULT`` (see parity.py).

JOB is a JSON file: the engine (``transformers`` or ``vllm``), the model folder, a LoRA adapter's folder
or null, the dtype, the prompts (token ids), ``max_tokens`` and ``top_logprobs``. Each prompt is continued
greedily for exactly ``max_tokens`` tokens (EOS does not stop it, as the server's ``ignore_eos``), and
RESULT receives ``{"samples": [{"tokens", "logprobs", "top"}, ...]}``: the tokens, each one's logprob
and the ``top_logprobs`` likeliest ``[token, logprob]`` pairs at each position, all from the raw logits in
float32. Where the reference cannot run here (a package missing, a folder that is not a model or an
adapter, an adapter it cannot apply) RESULT holds ``{"unavailable": why}``; any other failure ends the
child with a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

_PACKAGES = {"transformers": ("torch", "transformers", "safetensors"), "vllm": ("vllm",)}


class Unavailable(Exception):
    """The reference cannot run here; the message says what, why and what to do."""


def main(argv: list[str]) -> None:
    job_path, result_path = argv
    job = json.loads(Path(job_path).read_text())
    try:
        _check(job)
        result: dict[str, Any] = {"samples": ENGINES[job["engine"]](job)}
    except Unavailable as why:
        result = {"unavailable": str(why)}
    Path(result_path).write_text(json.dumps(result))


def _check(job: dict[str, Any]) -> None:
    """Raise Unavailable unless the engine's packages are installed and the folders hold a model and an adapter."""
    engine = job["engine"]
    missing = [name for name in _PACKAGES[engine] if importlib.util.find_spec(name) is None]
    if missing:
        raise Unavailable(
            f"the {engine} reference needs {' and '.join(missing)}, not installed for {sys.executable}: "
            f"pip install {' '.join(missing)} there (pytest-vllm's 'cpu' extra has them)"
        )
    if not (Path(job["model"]) / "config.json").is_file():
        raise Unavailable(
            f"{job['model']} is not a Hugging Face model folder (it has no config.json): "
            "launch the server on a local model folder to compare it with a reference"
        )
    lora = job["lora"]
    if lora and not (Path(lora) / "adapter_config.json").is_file():
        raise Unavailable(f"{lora} is not a LoRA adapter folder (it has no adapter_config.json)")


def _transformers(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Greedy samples of Hugging Face transformers, the adapter (if any) merged into the weights."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = "auto" if job["dtype"] == "auto" else getattr(torch, job["dtype"])
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=dtype).eval()
    if job["lora"]:
        _merge_lora(model, Path(job["lora"]))
    with torch.inference_mode():
        return [_greedy(model, prompt, job["max_tokens"], job["top_logprobs"]) for prompt in job["prompts"]]


def _greedy(model: Any, prompt: list[int], max_tokens: int, top_logprobs: int) -> dict[str, Any]:
    """`prompt` continued greedily for `max_tokens` tokens, one forward pass a token on the KV cache."""
    import torch

    tokens, logprobs, tops = [], [], []
    ids, cache = torch.tensor([prompt]), None
    for _ in range(max_tokens):
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        scores = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        values, indices = scores.topk(top_logprobs)
        token = int(indices[0])
        tokens.append(token)
        logprobs.append(float(values[0]))
        tops.append([[int(i), float(v)] for i, v in zip(indices, values, strict=True)])
        ids = torch.tensor([[token]])
    return {"tokens": tokens, "logprobs": logprobs, "top": tops}


def _merge_lora(model: Any, folder: Path) -> None:
    """Add a PEFT LoRA adapter to the weights it targets: W += B @ A * lora_alpha / r (/ sqrt(r) with rsLoRA)."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    unsupported = {
        "peft_type": config.get("peft_type", "LORA") != "LORA",
        "use_dora": bool(config.get("use_dora")),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
        "modules_to_save": bool(config.get("modules_to_save")),
        "bias": config.get("bias", "none") != "none",
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
    }
    weights = folder / "adapter_model.safetensors"
    if any(unsupported.values()) or not weights.is_file():
        what = [name for name, used in unsupported.items() if used] or ["weights not in adapter_model.safetensors"]
        raise Unavailable(
            f"the transformers reference merges plain LoRA adapters only; {folder} uses {', '.join(what)} "
            "(compare this adapter with the vllm reference alone)"
        )
    rank = config["r"]
    scale = config["lora_alpha"] / (rank**0.5 if config.get("use_rslora") else rank)
    tensors = load_file(weights)
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        prefix = key.removesuffix(".lora_A.weight")
        b = tensors[prefix + ".lora_B.weight"]
        try:
            layer = model.get_submodule(prefix.removeprefix("base_model.model."))
        except AttributeError:
            raise Unavailable(f"{folder} adapts {prefix!r}, which the model at hand does not have") from None
        delta = (b.to(torch.float32) @ a.to(torch.float32)) * scale
        layer.weight.data += delta.to(layer.weight.dtype)


def _vllm(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Greedy samples of vLLM's offline `LLM` class, with the adapter as a `LoRARequest`."""
    # vLLM is not installed where the linter runs (pyproject's mypy overrides list the others)
    from vllm import LLM, SamplingParams  # type: ignore[import-not-found, unused-ignore]
    from vllm.inputs import TokensPrompt  # type: ignore[import-not-found, unused-ignore]
    from vllm.lora.request import LoRARequest  # type: ignore[import-not-found, unused-ignore]

    lora = job["lora"]
    options: dict[str, Any] = {}
    request = None
    if lora:
        rank = json.loads((Path(lora) / "adapter_config.json").read_text())["r"]
        options = {"enable_lora": True, "max_loras": 1, "max_lora_rank": max(8, 1 << (rank - 1).bit_length())}
        request = LoRARequest("reference", 1, lora)
    longest = max(len(prompt) for prompt in job["prompts"]) + job["max_tokens"]
    llm = LLM(model=job["model"], dtype=job["dtype"], seed=0, max_model_len=longest, **options)
    params = SamplingParams(
        temperature=0.0, max_tokens=job["max_tokens"], logprobs=job["top_logprobs"], ignore_eos=True
    )
    prompts = [TokensPrompt(prompt_token_ids=prompt) for prompt in job["prompts"]]
    outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=request)
    return [_vllm_sample(output.outputs[0], job["top_logprobs"]) for output in outputs]


def _vllm_sample(completion: Any, top_logprobs: int) -> dict[str, Any]:
    """A completion's tokens and logprobs as the child writes them."""
    tops = [sorted(top.items(), key=lambda item: -item[1].logprob)[:top_logprobs] for top in completion.logprobs]
    return {
        "tokens": list(completion.token_ids),
        "logprobs": [top[token].logprob for token, top in zip(completion.token_ids, completion.logprobs, strict=True)],
        "top": [[[token, entry.logprob] for token, entry in top] for top in tops],
    }


ENGINES = {"transformers": _transformers, "vllm": _vllm}


if __name__ == "__main__":
    main(sys.argv[1:])
