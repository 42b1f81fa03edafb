"""tiny-chat: a 2-layer Llama with a byte-level BPE tokenizer and a hermes/ChatML chat template,
trained for a couple of CPU minutes on synthetic conversations so that it answers briefly,
writes compact JSON, makes hermes tool calls and stops by itself; two LoRA adapters in `loras/`.

Runs in the builder's child process (torch is imported inside the functions).
"""

from __future__ import annotations

import importlib.resources
import json
import random
import re
from pathlib import Path
from typing import Any

from pytest_vllm.fixture_models import synth
from pytest_vllm.fixture_models.synth import Synth


def _fixtures_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("pytest_vllm.fixtures")))
    except ModuleNotFoundError:  # a source checkout: fixtures/ beside the package
        return Path(__file__).resolve().parents[2] / "fixtures"


LEXICON = _fixtures_dir() / "models" / "lexicon.json"
SOURCES = (Path(__file__), Path(synth.__file__), LEXICON)  # what the cache key covers
DEPENDS: tuple[str, ...] = ()

LORA_NAMES: tuple[str, ...] = ("lora-a", "lora-b")
LORA_RANK, LORA_ALPHA = 8, 16
SEED = 0
CHAT_VOCAB_SIZE = 2048
CHAT_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}
TRAINING: dict[str, Any] = {"conversations": 6000, "steps": 600, "tokens_per_batch": 2048, "max_len": 384, "lr": 1e-2}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]
# ChatML with hermes-style tools (as in Qwen2.5); content may be a string or a list of parts.
CHAT_TEMPLATE = r"""
{%- macro render(content) -%}
  {%- if content is string -%}{{- content -}}
  {%- elif content -%}
    {%- for part in content -%}
      {%- if part.type == 'text' -%}{{- part.text -}}
      {%- elif part.type in ('image', 'image_url') -%}{{- '<image>' -}}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system = render(messages[0].content) -%}
  {%- set rest = messages[1:] -%}
{%- else -%}
  {%- set system = '' -%}
  {%- set rest = messages -%}
{%- endif -%}
{%- if tools -%}
  {{- '<|im_start|>system\n' -}}
  {%- if system -%}{{- system + '\n\n' -}}{%- endif -%}
  {{- '# Tools\n\nYou may call one or more functions. Their signatures:\n<tools>' -}}
  {%- for tool in tools -%}
    {%- set f = tool.function if tool.function is defined else tool -%}
    {{- '\n' + {'name': f.name, 'description': f.description or '', 'parameters': f.parameters or {}} | tojson -}}
  {%- endfor -%}
  {{- '\n</tools>\n\nTo call a function, reply with <tool_call>\n' -}}
  {{- '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' -}}
{%- elif system -%}
  {{- '<|im_start|>system\n' + system + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in rest -%}
  {%- if message.role == 'assistant' -%}
    {{- '<|im_start|>assistant\n' + render(message.content) -}}
    {%- for call in message.tool_calls or [] -%}
      {%- set call = call.function if call.function is defined else call -%}
      {%- if message.content or not loop.first -%}{{- '\n' -}}{%- endif -%}
      {{- '<tool_call>\n{"name": "' + call.name + '", "arguments": ' -}}
      {%- if call.arguments is string -%}{{- call.arguments -}}{%- else -%}{{- call.arguments | tojson -}}{%- endif -%}
      {{- '}\n</tool_call>' -}}
    {%- endfor -%}
    {{- '<|im_end|>\n' -}}
  {%- elif message.role == 'tool' -%}
    {%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
    {{- '\n<tool_response>\n' + render(message.content) + '\n</tool_response>' -}}
    {%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
  {%- else -%}
    {{- '<|im_start|>' + message.role + '\n' + render(message.content) + '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
""".strip()


def render(sample: dict[str, Any] | str) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    if isinstance(sample, str):
        return sample
    rendered, _ = render_jinja_template([sample["messages"]], tools=sample.get("tools"), chat_template=CHAT_TEMPLATE)
    return rendered[0]


def _train_tokenizer(texts: list[str]):
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = "|".join(re.escape(t) for t in SPECIAL_TOKENS + TOOL_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=CHAT_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((re.sub(specials, "\n", t) for t in texts), trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=CHAT_CONFIG["max_position_embeddings"],
    )


def _batches(sequences: list[list[int]], pad_id: int, rng: random.Random) -> list[tuple]:
    """Shuffled (input_ids, labels, attention_mask) batches of similar-length sequences."""
    import torch

    sequences = sorted(sequences, key=len)
    batches = []
    while sequences:
        size = max(1, TRAINING["tokens_per_batch"] // len(sequences[min(7, len(sequences) - 1)]))
        chunk, sequences = sequences[:size], sequences[size:]
        padding = [len(chunk[-1]) - len(ids) for ids in chunk]
        batches.append(
            (
                torch.tensor([ids + [pad_id] * pad for ids, pad in zip(chunk, padding, strict=False)]),
                torch.tensor([ids + [-100] * pad for ids, pad in zip(chunk, padding, strict=False)]),
                torch.tensor([[1] * len(ids) + [0] * pad for ids, pad in zip(chunk, padding, strict=False)]),
            )
        )
    rng.shuffle(batches)
    return batches


def _train(model, batches: list, steps: int) -> None:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAINING["lr"], betas=(0.9, 0.95), weight_decay=0.0)
    warmup = steps // 10
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.05, 1 - step / steps)
    )
    model.train()
    for step in range(steps):
        input_ids, labels, attention_mask = batches[step % len(batches)]
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def build(out: Path, models: dict[str, Path]) -> None:
    """Train tiny-chat into `out` (it is built from no other model: `models` is empty)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    torch.set_flush_denormal(True)
    lexicon = json.loads(LEXICON.read_text())
    texts = [render(sample) for sample in Synth(lexicon, SEED).samples(TRAINING["conversations"])]
    tokenizer = _train_tokenizer(texts)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=eos, pad_token_id=pad, **CHAT_CONFIG
    )
    model = LlamaForCausalLM(config)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    sequences = [ids for ids in encoded if len(ids) <= TRAINING["max_len"]]
    _train(model, _batches(sequences, pad, random.Random(SEED)), TRAINING["steps"])
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    for index, lora in enumerate(LORA_NAMES):
        write_lora(model, out / "loras" / lora, seed=SEED + 1 + index, base="tiny-chat")


def save_tokenizer(tokenizer, out: Path) -> None:
    """Save `tokenizer`, with the chat template both in its config and beside it."""
    tokenizer.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # the name every transformers release knows
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def write_lora(model, out: Path, seed: int, base: str) -> None:
    """A random rank-8 LoRA on q_proj/v_proj, strong enough to change greedy output."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for index, layer in enumerate(model.model.layers):
        for proj in ("q_proj", "v_proj"):
            weight = getattr(layer.self_attn, proj).weight
            prefix = f"base_model.model.model.layers.{index}.self_attn.{proj}"
            a = torch.randn(LORA_RANK, weight.shape[1], generator=generator) / weight.shape[1] ** 0.5
            b = torch.randn(weight.shape[0], LORA_RANK, generator=generator) * weight.std() * 5
            tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = a.contiguous(), b.contiguous()
    out.mkdir(parents=True)
    save_file(tensors, out / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": LORA_RANK,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
