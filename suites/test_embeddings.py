"""POST /v1/embeddings and vLLM's pooling routes on a pooling model.

The pooling routes are /pooling, /score and /rerank, and their versioned paths (/v1/score,
/v1/rerank, /v2/rerank), which must score alike.

Embeddings: float and base64 encodings (OpenAI's base64 is the little-endian float32 bytes
of the vector), list input order and `index`, token-id input, usage, `dimensions`
(Matryoshka models only), empty input, determinism, normalization. vLLM's own pooling
routes are checked for their shapes where the server offers them.

Vectors computed by separate requests are compared with a relative tolerance (`CLOSE`):
vLLM is not batch-invariant by default, so the same input batched with other requests may
round differently; the tolerance is far below the distance between different texts.
"""

import base64
import math
import re
import struct

import pytest

from pytest_vllm.checks.expect import answered_ok
from pytest_vllm.checks.openapi import validate
from pytest_vllm.outcomes import Unsupported

TEXT = "The quick brown fox jumps over the lazy dog."
TEXTS = ["Hello world", "A completely different sentence about trains.", "12345 67890"]
CLOSE = 1e-3
CAPABILITY = "embeddings"


@pytest.fixture(scope="module")
def post(http, server):
    """`post(path, **fields)`: POST with the server's model; returns the httpx response."""

    def send(path, **fields):
        return http.post(path, json={"model": server.model, **fields})

    return send


@pytest.fixture(scope="module")
def embed(post):
    """`embed(input, **fields)`: /v1/embeddings answered 200; returns the JSON body."""

    def send(input, **fields):
        response = post("/v1/embeddings", input=input, **fields)
        assert response.status_code == 200, (
            f"/v1/embeddings with input {input!r} {fields} should answer 200, got "
            f"{response.status_code}: {response.text[:300]}"
        )
        return response.json()

    return send


def _vectors(body):
    return [item["embedding"] for item in body["data"]]


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def _distance(a, b):
    """Relative L2 distance: |a - b| / |b| (inf if lengths differ)."""
    if len(a) != len(b):
        return math.inf
    return _norm([x - y for x, y in zip(a, b, strict=False)]) / (_norm(b) or 1.0)


def _cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=False)) / ((_norm(a) * _norm(b)) or 1.0)


def _decode(payload):
    """OpenAI's base64 embedding: the little-endian float32 bytes of the vector."""
    raw = base64.b64decode(payload, validate=True)
    assert len(raw) % 4 == 0, f"base64 embedding of {len(raw)} bytes is not a whole number of float32 values"
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _pooling_route(response, route):
    """Unsupported if `route` is not served (404 Not Found); else the response."""
    if response.status_code == 404 and response.json() == {"detail": "Not Found"}:
        raise Unsupported(f"unsupported: the server does not serve {route} (404 Not Found)")
    return response


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_response_matches_openai_schema(embed, encoding):
    body = embed(TEXTS[:2], encoding_format=encoding)
    if encoding == "base64":
        # OpenAI's schema describes the decoded form (the SDK decodes base64 before parsing):
        # the wire value must be a base64 string, validated here with the vector decoded.
        for item in body["data"]:
            assert isinstance(item.get("embedding"), str), (
                f"encoding_format base64 returns each embedding as a base64 string: {str(item)[:200]}"
            )
            item["embedding"] = _decode(item["embedding"])
    validate(body, "CreateEmbeddingResponse")


def test_base64_decodes_to_the_floats(embed):
    floats = _vectors(embed(TEXT))[0]
    encoded = _vectors(embed(TEXT, encoding_format="base64"))[0]
    assert isinstance(encoded, str), f"encoding_format base64 returns a string, got {type(encoded).__name__}"
    decoded = _decode(encoded)
    assert len(decoded) == len(floats) and _distance(decoded, floats) <= CLOSE, (
        f"the base64 embedding decoded as little-endian float32 (what OpenAI's SDK does) should be "
        f"the float embedding: {len(decoded)} values {decoded[:4]}... vs {len(floats)} values {floats[:4]}..."
    )
    assert all(isinstance(x, float) and math.isfinite(x) for x in floats), f"non-finite floats: {floats[:8]}"


def test_list_input_keeps_order_and_index(embed):
    batch = embed(TEXTS)
    indices = [item["index"] for item in batch["data"]]
    assert indices == list(range(len(TEXTS))), (
        f"one embedding per input, in input order, with index 0..{len(TEXTS) - 1} (OpenAI's Embedding.index): "
        f"got indices {indices}"
    )
    singles = [_vectors(embed(text))[0] for text in TEXTS]
    for position, vector in enumerate(_vectors(batch)):
        distances = [_distance(vector, single) for single in singles]
        nearest = distances.index(min(distances))
        assert nearest == position and distances[position] <= CLOSE, (
            f"data[{position}] should be the embedding of input {position} ({TEXTS[position]!r}) as embedded "
            f"alone; relative distances to each input's own embedding: {[f'{d:.2e}' for d in distances]}"
        )


def test_token_ids_embed_like_the_text(vllm, server, embed, post):
    vllm.require(server, "tokenize")
    response = post("/tokenize", prompt=TEXT)
    answered_ok(response, "/tokenize")
    tokens = response.json()["tokens"]
    text = embed(TEXT)
    for form, input in {"token ids": tokens, "a list of token-id lists": [tokens, tokens]}.items():
        body = embed(input)
        assert body["usage"]["prompt_tokens"] == len(tokens) * len(body["data"]), (
            f"{form} input is embedded as given ({len(tokens)} tokens each, from /tokenize): usage {body['usage']}"
        )
        for vector in _vectors(body):
            assert _distance(vector, _vectors(text)[0]) <= CLOSE, (
                f"the token ids /tokenize gives for {TEXT!r} ({tokens}), sent as {form}, should embed like "
                f"the text itself: relative distance {_distance(vector, _vectors(text)[0]):.2e}"
            )


def test_usage_counts_prompt_tokens(vllm, server, embed, post):
    vllm.require(server, "tokenize")
    counts = []
    for text in TEXTS:
        response = post("/tokenize", prompt=text)
        answered_ok(response, "/tokenize")
        counts.append(response.json()["count"])
    for input, expected in ((TEXTS[0], counts[0]), (TEXTS, sum(counts))):
        usage = embed(input)["usage"]
        assert usage["prompt_tokens"] == expected and usage["total_tokens"] == expected, (
            f"usage.prompt_tokens should be /tokenize's count for {input!r} ({expected}) and total_tokens "
            f"the same (an embedding produces no tokens): {usage}"
        )


def test_dimensions_shortens_the_vector(embed, post):
    full = _vectors(embed(TEXT))[0]
    size = len(full) // 2
    response = post("/v1/embeddings", input=TEXT, dimensions=size)
    message = response.text
    listed = re.search(r"only supports Matryoshka dimensions \[([\d, ]+)\]", message)
    if response.status_code == 400 and listed:
        size = min(int(d) for d in listed.group(1).split(","))
        response = post("/v1/embeddings", input=TEXT, dimensions=size)
    elif response.status_code == 400 and re.search(r"not support\w* (Matryoshka|dimensions)", message, re.IGNORECASE):
        raise Unsupported(f"unsupported: the model has no Matryoshka embeddings (`dimensions`): {message[:300]}")
    assert response.status_code == 200, (
        f"dimensions={size} (half the model's {len(full)}) should answer 200, or 400 saying the model does "
        f"not support dimensions; got {response.status_code}: {response.text[:300]}"
    )
    vector = _vectors(response.json())[0]
    assert len(vector) == size, f"dimensions={size} gives a vector of {size} values (OpenAI), got {len(vector)}"
    assert _cosine(vector, full[:size]) >= 1 - CLOSE, (
        f"a Matryoshka embedding of {size} dimensions is the full embedding's first {size} values "
        f"(rescaled if normalized): cosine {_cosine(vector, full[:size]):.6f}"
    )


EMPTY_INPUTS = {"empty-string": "", "empty-list": [], "empty-token-list": [[]]}


@pytest.mark.parametrize("input", EMPTY_INPUTS.values(), ids=EMPTY_INPUTS.keys())
def test_empty_input_is_rejected(post, input):
    response = post("/v1/embeddings", input=input)
    assert 400 <= response.status_code < 500, (
        f"OpenAI's CreateEmbeddingRequest: the input 'cannot be an empty string' and its arrays have "
        f"minItems 1, so input {input!r} should be refused with a 4xx; got {response.status_code}: "
        f"{response.text[:200]}"
    )


def test_same_input_same_vector(embed):
    first, second = (_vectors(embed(TEXT))[0] for _ in range(2))
    assert _distance(first, second) <= CLOSE, (
        f"the same input embedded twice should give the same vector: relative distance "
        f"{_distance(first, second):.2e}, first values {first[:4]} vs {second[:4]}"
    )


def test_use_activation_normalizes(vllm, server, embed, record_property):
    vllm.require(server, "vllm_sampling")  # use_activation is vLLM's pooling field
    raw = _vectors(embed(TEXT, use_activation=False))[0]
    activated = _vectors(embed(TEXT, use_activation=True))[0]
    default = _vectors(embed(TEXT))[0]
    record_property("embedding_norm", _norm(default))
    record_property("embedding_norm_without_activation", _norm(raw))
    assert _distance(default, activated) <= CLOSE or _distance(default, raw) <= CLOSE, (
        "with use_activation unset vLLM applies the pooler's default: the vector should be the "
        f"use_activation=true or the =false one; norms {_norm(default)}, {_norm(activated)}, {_norm(raw)}"
    )
    if _distance(activated, raw) > CLOSE:  # the model's embedding head has an activation: L2 normalization
        assert abs(_norm(activated) - 1) <= CLOSE and _cosine(activated, raw) >= 1 - CLOSE, (
            "vLLM's embedding activation is L2 normalization: with use_activation=true the vector should be "
            f"the use_activation=false vector scaled to norm 1; norms {_norm(activated)} vs {_norm(raw)}, "
            f"cosine {_cosine(activated, raw):.6f}"
        )


def test_pooling_matches_embeddings(embed, post):
    response = _pooling_route(post("/pooling", input=TEXTS[:2], task="embed"), "/pooling")
    answered_ok(response, "/pooling task=embed")
    body = response.json()
    assert body["object"] == "list" and [item["index"] for item in body["data"]] == [0, 1], (
        f"/pooling answers a list with one item per input, index 0 and 1: {str(body)[:300]}"
    )
    assert all(item["object"] == "pooling" for item in body["data"]), f"items are 'pooling' objects: {str(body)[:300]}"
    for item, expected in zip(body["data"], _vectors(embed(TEXTS[:2])), strict=False):
        assert _distance(item["data"], expected) <= CLOSE, (
            f"/pooling with task embed should give /v1/embeddings' vector: {item['data'][:4]} vs {expected[:4]}"
        )


def test_score_shape(post):
    response = _pooling_route(post("/score", text_1=TEXT, text_2=TEXTS), "/score")
    answered_ok(response, "/score")
    body = response.json()
    data = body["data"]
    assert [item["index"] for item in data] == list(range(len(TEXTS))), (
        f"/score gives one score per text_2 item, in order: {str(body)[:300]}"
    )
    assert all(item["object"] == "score" and math.isfinite(item["score"]) for item in data), (
        f"each item is a 'score' object with a finite score: {data}"
    )
    assert body["usage"]["prompt_tokens"] > 0, f"usage counts the scored prompts: {body['usage']}"


def test_rerank_orders_and_limits(post):
    response = _pooling_route(post("/score", text_1=TEXT, text_2=TEXTS), "/score")
    answered_ok(response, "/score")
    scores = [item["score"] for item in response.json()["data"]]
    response = _pooling_route(post("/rerank", query=TEXT, documents=TEXTS), "/rerank")
    answered_ok(response, "/rerank")
    results = response.json()["results"]
    assert sorted(r["index"] for r in results) == list(range(len(TEXTS))), f"one result per document: {results}"
    relevance = [r["relevance_score"] for r in results]
    assert relevance == sorted(relevance, reverse=True), (
        f"results are sorted by relevance_score, best first: {relevance}"
    )
    for r in results:
        assert r["document"]["text"] == TEXTS[r["index"]], f"result {r} should carry document {r['index']}'s text"
        assert abs(r["relevance_score"] - scores[r["index"]]) <= CLOSE, (
            f"/rerank's relevance_score for document {r['index']} should be /score's score for the same "
            f"pair ({scores[r['index']]}): {r}"
        )
    limited = post("/rerank", query=TEXT, documents=TEXTS, top_n=1)
    answered_ok(limited, "/rerank top_n=1")
    assert [r["index"] for r in limited.json()["results"]] == [results[0]["index"]], (
        f"top_n=1 keeps only the best document ({results[0]['index']}): {limited.json()['results']}"
    )


@pytest.mark.parametrize(
    ("route", "alias"),
    [
        pytest.param("/score", "/v1/score", id="v1-score"),
        pytest.param("/rerank", "/v1/rerank", id="v1-rerank"),
        pytest.param("/rerank", "/v2/rerank", id="v2-rerank"),
    ],
)
def test_versioned_pooling_routes_answer_as_their_base(post, route, alias):
    fields = {"text_1": TEXT, "text_2": TEXTS} if route == "/score" else {"query": TEXT, "documents": TEXTS}
    base = _pooling_route(post(route, **fields), route)
    versioned = _pooling_route(post(alias, **fields), alias)
    assert base.status_code == versioned.status_code == 200, (
        f"{route} and {alias} answer 200: {base.status_code}, {versioned.status_code}: {versioned.text[:300]}"
    )
    key, value = ("data", "score") if route == "/score" else ("results", "relevance_score")
    scores = [{item["index"]: item[value] for item in body.json()[key]} for body in (base, versioned)]
    assert scores[0].keys() == scores[1].keys() and all(abs(scores[0][i] - scores[1][i]) <= CLOSE for i in scores[0]), (
        f"{alias} is {route} under a versioned path, so it scores alike: {scores[1]} vs {scores[0]}"
    )
