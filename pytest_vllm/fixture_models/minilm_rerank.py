"""minilm-rerank: a cross-encoder (BertForSequenceClassification, one label) on MiniLM's encoder.

The encoder and tokenizer are all-MiniLM-L6-v2's; the one-label head is random but seeded and
wide enough that different pairs score far apart. One label is what vLLM needs to serve a
classifier as a cross-encoder: /classify (a sigmoid probability), /score and /rerank.

Runs in the builder's child process (torch is imported inside the functions).
"""

from __future__ import annotations

from pathlib import Path

SOURCES = (Path(__file__),)  # what the cache key covers, beside minilm-embed's key
DEPENDS = ("minilm-embed",)
SEED = 0
HEAD_STD = 1.0
LABEL = "relevant"


def build(out: Path, models: dict[str, Path]) -> None:
    """Build minilm-rerank into `out` from the MiniLM folder at models["minilm-embed"]."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(SEED)
    source = models["minilm-embed"]
    config = BertConfig.from_pretrained(source, num_labels=1, id2label={0: LABEL}, label2id={LABEL: 0})
    config.architectures = ["BertForSequenceClassification"]
    model = BertForSequenceClassification.from_pretrained(source, config=config)
    torch.nn.init.normal_(model.classifier.weight, std=HEAD_STD)
    torch.nn.init.zeros_(model.classifier.bias)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
