"""tiny-random: an untrained 2-layer Llama, unlike tiny-chat in every way the suites could lean on.

Its tokenizer is a sentencepiece-style BPE (``▁`` for spaces) with byte fallback: characters it
never saw become ``<0xNN>`` tokens, several of which decode to partial UTF-8. Its weights are
random (another seed), so it never learned to stop, to write JSON or to call tools; it keeps
tiny-chat's hermes/ChatML template and has two random LoRA adapters. The suites must judge a
server serving it as fairly as one serving a trained model: this is the model they were not
tuned to.

Runs in the builder's child process (torch is imported inside the functions).
"""

from __future__ import annotations

import json
from pathlib import Path

from pytest_vllm.fixture_models import synth, tiny_chat
from pytest_vllm.fixture_models.synth import Synth

SOURCES = (Path(__file__), Path(synth.__file__), Path(tiny_chat.__file__), tiny_chat.LEXICON)
DEPENDS: tuple[str, ...] = ()

LORA_NAMES = tiny_chat.LORA_NAMES
LORA_RANK = tiny_chat.LORA_RANK
SEED = 7
VOCAB_SIZE = 1024  # byte tokens and specials included
TEXTS = 1500
CONFIG = {**tiny_chat.CHAT_CONFIG, "initializer_range": 0.08}  # larger than HF's 0.02: fewer exact ties
BYTE_TOKENS = [f"<0x{byte:02X}>" for byte in range(256)]


def _tokenizer(texts: list[str]):
    """A Metaspace BPE with byte fallback (as Llama's and Mistral's), wrapped for transformers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [*tiny_chat.SPECIAL_TOKENS, "<unk>"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(BYTE_TOKENS) - len(tiny_chat.TOOL_TOKENS),
        special_tokens=specials,
        limit_alphabet=60,  # rarer characters fall back to bytes
        show_progress=False,
    )
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace()
    trained.train_from_iterator(texts, trainer)
    learned = json.loads(trained.to_str())["model"]
    order = [
        *specials,
        *BYTE_TOKENS,
        *(t for t in sorted(learned["vocab"], key=learned["vocab"].get) if t not in specials),
    ]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(order))}
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in tiny_chat.TOOL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        chat_template=tiny_chat.CHAT_TEMPLATE,
        model_max_length=CONFIG["max_position_embeddings"],
    )


def build(out: Path, models: dict[str, Path]) -> None:
    """Write tiny-random into `out` (it is built from no other model: `models` is empty)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    lexicon = json.loads(tiny_chat.LEXICON.read_text())
    texts = [tiny_chat.render(sample) for sample in Synth(lexicon, SEED).samples(TEXTS)]
    tokenizer = _tokenizer(texts)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=eos, pad_token_id=pad, **CONFIG)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    model.save_pretrained(out)
    tiny_chat.save_tokenizer(tokenizer, out)
    for index, lora in enumerate(LORA_NAMES):
        tiny_chat.write_lora(model, out / "loras" / lora, seed=SEED + 1 + index, base="tiny-random")
