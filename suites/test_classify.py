"""vLLM's /classify on a sequence-classification model, and /score and /rerank when it is a cross-encoder.

/classify answers one item per input, in order, each with `num_classes` probabilities (a
softmax over two or more labels, a sigmoid for one) and the `label` of the likeliest class;
`use_activation: false` gives the raw logits, whose activation is those probabilities; an
input classifies alike alone or batched, and as its token ids. A one-label classifier is a
cross-encoder (vLLM scores with it only then): /score gives each (text_1, text_2) pair the
same score batched as alone, and /rerank orders the documents by those scores.

Values from separate requests are compared within `CLOSE` (vLLM is not batch-invariant).
"""

import math

import pytest

from pytest_vllm.outcomes import Unsupported

TEXTS = ["Hello world", "A completely different sentence about trains.", "12345 67890"]
QUERY = "Where do trains go?"
CLOSE = 1e-3
CAPABILITY = "classify"


@pytest.fixture(scope="module")
def post(http, server):
    """`post(path, **fields)`: POST with the server's model, answered 200; returns the JSON body."""

    def send(path, **fields):
        response = http.post(path, json={"model": server.model, **fields})
        assert response.status_code == 200, (
            f"{path} with {fields} should answer 200, got {response.status_code}: {response.text[:300]}"
        )
        return response.json()

    return send


def _probs(body):
    return [item["probs"] for item in body["data"]]


def _activation(logits):
    """vLLM's classification activation: softmax over two or more labels, sigmoid for one."""
    if len(logits) == 1:
        return [1 / (1 + math.exp(-logits[0]))]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    return [e / sum(exps) for e in exps]


def _close(a, b):
    return len(a) == len(b) and all(abs(x - y) <= CLOSE for x, y in zip(a, b, strict=False))


@pytest.fixture(scope="module")
def cross_encoder(post):
    """The server is a cross-encoder (one label); else the check is unsupported."""
    if post("/classify", input=TEXTS[0])["data"][0]["num_classes"] != 1:
        raise Unsupported(
            "unsupported: the classifier has more than one label, and vLLM scores with one-label models only"
        )


def test_one_distribution_per_input(post, server):
    body = post("/classify", input=TEXTS)
    assert body["object"] == "list" and body["model"] == server.model, (
        f"/classify answers a list naming the model {server.model!r}: {str(body)[:300]}"
    )
    data = body["data"]
    assert [item["index"] for item in data] == list(range(len(TEXTS))), f"one item per input, in order: {data}"
    labels = {}
    for item in data:
        probs = item["probs"]
        assert item["num_classes"] == len(probs) >= 1, f"num_classes counts the probabilities: {item}"
        assert all(0 <= p <= 1 for p in probs), f"each probability is in [0, 1]: {item}"
        if len(probs) > 1:
            assert abs(sum(probs) - 1) <= CLOSE, f"the probabilities over {len(probs)} labels sum to 1: {item}"
        best = probs.index(max(probs))
        assert labels.setdefault(best, item["label"]) == item["label"], (
            f"`label` names the likeliest class, so the same class gets the same label: class {best} is "
            f"{labels[best]!r} and {item['label']!r} ({data})"
        )
    assert len(set(labels.values())) == len(labels), f"different classes have different labels: {labels}"
    assert body["usage"]["prompt_tokens"] > 0, f"usage counts the classified prompts: {body['usage']}"


def test_use_activation_false_gives_the_logits(post):
    activated = _probs(post("/classify", input=TEXTS))
    logits = _probs(post("/classify", input=TEXTS, use_activation=False))
    for text, probs, raw in zip(TEXTS, activated, logits, strict=False):
        assert _close(_activation(raw), probs), (
            f"use_activation=false gives the logits, whose softmax (sigmoid for one label) is the probabilities; "
            f"{text!r}: logits {raw} -> {_activation(raw)}, probabilities {probs}"
        )
    assert any(not _close(raw, probs) for probs, raw in zip(activated, logits, strict=False)), (
        f"use_activation=false should change the values (logits, not probabilities): {logits}"
    )


def test_batched_inputs_classify_as_alone(post):
    batched = _probs(post("/classify", input=TEXTS))
    for text, probs in zip(TEXTS, batched, strict=False):
        alone = _probs(post("/classify", input=text))[0]
        assert _close(alone, probs), f"{text!r} classified alone gives {alone}, in a batch {probs}"
    assert any(not _close(batched[0], other) for other in batched[1:]), (
        f"different texts should not all get the same probabilities: {batched}"
    )


@pytest.mark.vllm_requires("tokenize")
def test_token_ids_classify_like_the_text(post):
    tokens = post("/tokenize", prompt=TEXTS[1])["tokens"]
    by_text, by_ids = post("/classify", input=TEXTS[1]), post("/classify", input=[tokens])
    assert _close(_probs(by_ids)[0], _probs(by_text)[0]), (
        f"the token ids of {TEXTS[1]!r} classify like the text: {_probs(by_ids)[0]} vs {_probs(by_text)[0]}"
    )
    assert by_ids["usage"]["prompt_tokens"] == by_text["usage"]["prompt_tokens"] == len(tokens), (
        f"usage.prompt_tokens counts the {len(tokens)} tokens either way: {by_ids['usage']}, {by_text['usage']}"
    )


def test_empty_input_list_is_rejected(http, server):
    response = http.post("/classify", json={"model": server.model, "input": []})
    assert 400 <= response.status_code < 500, (
        f"/classify with no input is the client's error, a 4xx; got {response.status_code}: {response.text[:300]}"
    )


def test_cross_encoder_scores_each_pair_alike(post, cross_encoder):
    batched = [item["score"] for item in post("/score", text_1=QUERY, text_2=TEXTS)["data"]]
    alone = [post("/score", text_1=QUERY, text_2=text)["data"][0]["score"] for text in TEXTS]
    assert _close(batched, alone), f"each pair scores alike batched and alone: {batched} vs {alone}"
    assert all(0 <= s <= 1 for s in batched), f"a one-label cross-encoder's scores are sigmoid probabilities: {batched}"
    assert len({round(s, 3) for s in batched}) > 1, f"different documents should not all score the same: {batched}"


def test_cross_encoder_rerank_follows_the_scores(post, cross_encoder):
    scores = [item["score"] for item in post("/score", text_1=QUERY, text_2=TEXTS)["data"]]
    results = post("/rerank", query=QUERY, documents=TEXTS)["results"]
    assert [r["index"] for r in results] == sorted(range(len(TEXTS)), key=lambda i: -scores[i]), (
        f"/rerank orders the documents by /score's scores {scores}, best first: {results}"
    )
    assert _close([r["relevance_score"] for r in results], sorted(scores, reverse=True)), (
        f"each relevance_score is the pair's /score score {scores}: {results}"
    )
