"""Named server capabilities, each detected once by a cheap probe that looks for an effect.

A check that needs a capability the server lacks ends as *unsupported*. There are three kinds:

- What any server may have, or what vLLM has only with some models or settings (OpenAI's
  `completions`, `chat`, `logprobs`, `response_format`, `tools`, `vision`, `embeddings`,
  `auth`, `responses`, `responses_store`; Anthropic's `messages` and `count_tokens`; and `lora`, `lora_runtime`,
  `adapters`, `pooling`, `classify`): probed on every server. A probe answers "absent" only on
  an answer that means absent (a 404 route, a documented "not enabled" message, a constraint
  or an image with no effect); any other unexpected answer is a ProbeError, so a broken
  feature is never mistaken for a missing one. A 200 whose body is an error counts as that error.
- `vllm`: the server identifies itself as vLLM (GET /version answers {"version": ...}).
- vLLM's own routes and fields (`tokenize`, `metrics`, `health`, `ping`, `version`,
  `chat_batch`, `invocations`, `vllm_sampling`, `structured_outputs`, `return_token_ids`,
  `continuous_usage_stats`, `model_extras`): on vLLM they are taken as present without a probe,
  so one that vLLM accepts and ignores fails its checks (fail-open detection), except those older
  releases lack (`return_token_ids`, `chat_batch`: `SINCE_A_RELEASE`), probed by effect on vLLM too.
  On any other server a probe looks for vLLM's behaviour (a gateway may forward it); anything else
  is absent.
"""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_vllm.outcomes import ProbeError, Unsupported

if TYPE_CHECKING:
    import httpx

    from pytest_vllm.launchers import VllmServer

_PROBE_TOKENS = 1
_CONSTRAINED_TOKENS = 12
# Words enough that any tokenizer makes more than _TRUNCATE_TO tokens of them.
_LONG_PROMPT = "one two three four five six seven eight nine ten"
_TRUNCATE_TO = 2
_NO_ADAPTER = "pytest-vllm-probe-absent"


@dataclass
class Probe:
    """What a probe works with: the server, a client carrying its key, and the other capabilities."""

    server: VllmServer
    client: httpx.Client
    has: Callable[[str], bool]

    @property
    def model(self) -> str:
        return self.server.model

    def post(self, path: str, body: dict) -> httpx.Response:
        return self.client.post(path, json={"model": self.model, **body})


def _served_unless_refused(response: httpx.Response, statuses: tuple[int, ...], *fragments: str) -> bool:
    """Whether the probe was served: True for 200, False for a refusal that names the feature (a
    listed status whose body mentions a fragment), else ProbeError (the server erred). A 200 whose
    body is an error is that error (older vLLM releases answer "The model does not support X API" so):
    absent where it says the feature is not supported."""
    error = _json(response).get("error") if response.status_code == 200 else None
    if response.status_code == 200 and not error:
        return True
    text = response.text
    if error and "not support" in text:
        return False
    if response.status_code in statuses and (not fragments or any(f in text for f in fragments)):
        return False
    raise ProbeError(
        f"{response.request.method} {response.request.url.path} answered {response.status_code}: {text[:300]}"
    )


def _json(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(body: dict) -> str:
    """The first choice's text of a chat or completions answer ('' if there is none)."""
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    return choice.get("text") or message.get("content") or ""


# OpenAI's API


def _completions(p: Probe) -> bool:
    body = {"prompt": "Hello", "max_tokens": _PROBE_TOKENS}
    return _served_unless_refused(p.post("/v1/completions", body), (404,), "Not Found")


def _chat(p: Probe) -> bool:
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": _PROBE_TOKENS}
    return _served_unless_refused(p.post("/v1/chat/completions", body), (400, 404), "Not Found", "chat template")


def _logprobs(p: Probe) -> bool:
    body = {"prompt": "Hello", "max_tokens": _PROBE_TOKENS, "logprobs": 1}
    return _served_unless_refused(p.post("/v1/completions", body), (400, 404), "logprobs", "Not Found")


def _response_format(p: Probe) -> bool:
    """OpenAI's `response_format`: accepted on vLLM; elsewhere, a json_schema allowing one object only is enforced."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "enum": ["x"]}},
        "required": ["a"],
        "additionalProperties": False,
    }
    body = {
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": _CONSTRAINED_TOKENS,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "probe", "schema": schema}},
    }
    response = p.post("/v1/chat/completions", body)
    if response.status_code == 500 and "Input should be" in response.text and "json_schema" in response.text:
        return False  # a validation error answered as 500 (llama.cpp): json_schema is not a type it knows
    if not _served_unless_refused(response, (400, 404, 422), "response_format", "json_schema", "Not Found"):
        return False
    if p.has("vllm"):
        return True  # vLLM validates what it takes: a constraint it takes and ignores fails its checks
    return _is_prefix_of(_text(_json(response)), ['{"a":"x"}'])


def _is_prefix_of(text: str, allowed: list[str]) -> bool:
    """`text`, whitespace aside, starts one of `allowed` (a cut constrained output) or is one."""
    compact = "".join(text.split())
    return bool(compact) and any(a.startswith(compact) or compact == a for a in allowed)


def _tools(p: Probe) -> bool:
    tool = {"type": "function", "function": {"name": "probe", "parameters": {"type": "object"}}}
    body = {
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": [tool],
        "tool_choice": "auto",
        "max_tokens": _PROBE_TOKENS,
    }
    return _served_unless_refused(
        p.post("/v1/chat/completions", body), (400, 404), "--enable-auto-tool-choice", "Not Found"
    )


def _lora(p: Probe) -> bool:
    response = p.client.get("/v1/models")
    response.raise_for_status()
    return any(entry.get("parent") for entry in response.json()["data"])


def _png_data_url(side: int, pixels: list[tuple[int, int, int]]) -> str:
    from PIL import Image

    image = Image.new("RGB", (side, side))
    image.putdata(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


_IMAGE_SIDES = (32, 4)  # a smaller image where the first is too long a prompt (a server pasting it as text)
_TOO_LONG = ("context", "too long", "exceed", "maximum")


def _vision(p: Probe) -> bool:
    """Images reach the model. On vLLM, an image accepted (200); elsewhere, an image adds prompt
    tokens, as many for a plain image as for a noisy one of the same size (a server that pastes parts
    in as text counts the URL), and the two change what the model predicts (a placeholder does not).
    A 400 for the prompt's length is ambiguous (a server pasting the URL in as text, or a model with a
    short context): the probe asks again with a 4x4 image before it judges."""
    *larger, smallest = _IMAGE_SIDES
    for side in larger:
        try:
            return _image_reaches_the_model(p, side)
        except ProbeError as error:
            if not any(word in str(error).lower() for word in _TOO_LONG):
                raise
    return _image_reaches_the_model(p, smallest)


def _image_reaches_the_model(p: Probe, side: int) -> bool:
    rng = random.Random(0)
    pixels = side * side
    plain = _png_data_url(side, [(200, 30, 30)] * pixels)
    noisy = _png_data_url(side, [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(pixels)])
    answers = []
    for url in (None, plain, noisy):
        content: list[dict[str, Any]] = [{"type": "text", "text": "What is this?"}]
        if url:
            content.insert(0, {"type": "image_url", "image_url": {"url": url}})
        body = {
            "messages": [{"role": "user", "content": content}],
            "max_tokens": _PROBE_TOKENS,
            "temperature": 0,
            **({"logprobs": True, "top_logprobs": 5} if p.has("logprobs") else {}),
        }
        response = p.post("/v1/chat/completions", body)
        present = _served_unless_refused(
            response,
            (400, 404, 422),
            "Not Found",
            "not a multimodal",
            "not support",
            "At most 0 image",
            "chat template",
        )
        if not present:
            return False
        if url and p.has("vllm"):
            return True  # vLLM refuses images a model cannot take (400): one it takes and ignores fails
        answers.append(_json(response))
    counts = [(a.get("usage") or {}).get("prompt_tokens") for a in answers]
    tokens = [count for count in counts if isinstance(count, int)]
    if len(tokens) != len(counts):
        raise ProbeError(f"image prompts answered without usage.prompt_tokens: {counts}")
    if not tokens[1] == tokens[2] > tokens[0]:
        return False
    return _first_prediction(answers[1]) != _first_prediction(answers[2])


def _first_prediction(body: dict) -> object:
    """What the model predicted first: the top logprobs (rounded) where given, else the text."""
    choice = (body.get("choices") or [{}])[0]
    content = ((choice.get("logprobs") or {}).get("content") or [{}])[0]
    top = content.get("top_logprobs")
    if top:
        return [(t.get("token"), round(t.get("logprob", 0.0), 3)) for t in top]
    return _text(body)


def _embeddings(p: Probe) -> bool:
    """A model that generates text is taken not to embed (vLLM runs one or the other): asking it
    anyway would draw a 404 from upstream, and a gateway cools a deployment down on a 404."""
    if p.has("completions") or p.has("chat"):
        return False
    return _served_unless_refused(
        p.post("/v1/embeddings", {"input": "Hello"}),
        (400, 404, 500),
        "Not Found",
        "does not support",
        "embedding=True",  # llama.cpp: "must be created with embedding=True"
    )


def _responses(p: Probe) -> bool:
    return _served_unless_refused(
        p.post("/v1/responses", {"input": "Hello", "max_output_tokens": 1}), (404,), "Not Found"
    )


def _responses_store(p: Probe) -> bool:
    """A response created with `store` can be retrieved (vLLM ignores `store` unless told to keep them)."""
    if not p.has("responses"):
        return False
    created = p.post("/v1/responses", {"input": "Hello", "max_output_tokens": 1, "store": True})
    if not _served_unless_refused(created, (400,), "store"):
        return False
    retrieved = p.client.get(f"/v1/responses/{_json(created).get('id')}")
    return _served_unless_refused(retrieved, (404,))


def _messages(p: Probe) -> bool:
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}
    return _served_unless_refused(p.post("/v1/messages", body), (404,), "Not Found")


def _auth(p: Probe) -> bool:
    import httpx

    response = httpx.get(str(p.client.base_url.join("/v1/models")), timeout=p.client.timeout)
    if response.status_code in (200, 401):
        return response.status_code == 401
    raise ProbeError(f"GET /v1/models without a key answered {response.status_code}")


# vLLM's identity, routes and fields


def _vllm(p: Probe) -> bool:
    return p.server.version != "unknown"


def _tokenize(p: Probe) -> bool:
    body = _json(p.post("/tokenize", {"prompt": "Hello"}))
    return isinstance(body.get("tokens"), list) and isinstance(body.get("count"), int)


def _metrics(p: Probe) -> bool:
    response = p.client.get("/metrics")
    return response.status_code == 200 and "vllm:" in response.text


def _health(p: Probe) -> bool:
    response = p.client.get("/health")
    return response.status_code == 200 and response.content == b""


def _ping(p: Probe) -> bool:
    return p.client.get("/ping").status_code == 200


def _lora_runtime(p: Probe) -> bool:
    return _route_refuses_an_unknown_adapter(p.post("/v1/unload_lora_adapter", {"lora_name": _NO_ADAPTER}))


def _adapters(p: Probe) -> bool:
    return _route_refuses_an_unknown_adapter(p.client.delete(f"/adapters/{_NO_ADAPTER}"))


def _route_refuses_an_unknown_adapter(response: httpx.Response) -> bool:
    """An unload route is served if it refuses an unknown adapter with a 4xx of its own (not the
    router's bare 404 or 405)."""
    if response.status_code in (404, 405) and _json(response).get("detail") in ("Not Found", "Method Not Allowed"):
        return False
    if 400 <= response.status_code < 500:
        return True
    raise ProbeError(
        f"{response.request.method} {response.request.url.path} answered {response.status_code}: {response.text[:300]}"
    )


def _classify(p: Probe) -> bool:
    """A model that generates text is taken not to classify (vLLM runs one or the other)."""
    if p.has("completions") or p.has("chat"):
        return False
    return _served_unless_refused(p.post("/classify", {"input": "Hello"}), (400, 404), "Not Found", "does not support")


def _pooling(p: Probe) -> bool:
    return p.has("embeddings") and _served_unless_refused(p.post("/pooling", {"input": "Hello"}), (404,), "Not Found")


def _vllm_sampling(p: Probe) -> bool:
    """vLLM's sampling fields are honoured: `truncate_prompt_tokens` shows in usage."""
    body = {"prompt": _LONG_PROMPT, "max_tokens": _PROBE_TOKENS, "truncate_prompt_tokens": _TRUNCATE_TO}
    usage = _json(p.post("/v1/completions", body)).get("usage") or {}
    return usage.get("prompt_tokens") == _TRUNCATE_TO


def _structured_outputs(p: Probe) -> bool:
    choices = ["pytest-vllm-alpha", "pytest-vllm-beta"]
    body = {
        "prompt": "Hello",
        "max_tokens": _CONSTRAINED_TOKENS,
        "temperature": 0,
        "structured_outputs": {"choice": choices},
    }
    return _is_prefix_of(_text(_json(p.post("/v1/completions", body))), choices)


def _return_token_ids(p: Probe) -> bool:
    body = {"prompt": "Hello", "max_tokens": _PROBE_TOKENS, "return_token_ids": True}
    choices = _json(p.post("/v1/completions", body)).get("choices") or [{}]
    token_ids = choices[0].get("token_ids") if isinstance(choices[0], dict) else None
    return isinstance(token_ids, list) and all(isinstance(t, int) for t in token_ids)


def _continuous_usage_stats(p: Probe) -> bool:
    body = {
        "model": p.model,
        "prompt": "Hello",
        "max_tokens": 2,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    with p.client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[len("data: ") :])
                if chunk.get("choices"):
                    return isinstance(chunk.get("usage"), dict)
    return False


def _chat_batch(p: Probe) -> bool:
    body = {"messages": [[{"role": "user", "content": "Hello"}]], "max_tokens": _PROBE_TOKENS}
    response = p.post("/v1/chat/completions/batch", body)
    if p.has("vllm"):  # a release without the route answers 404; one with it, broken, fails its checks
        return _served_unless_refused(response, (404, 405), "Not Found")
    return isinstance(_json(response).get("choices"), list)


def _count_tokens(p: Probe) -> bool:
    body = {"messages": [{"role": "user", "content": "Hello"}]}
    return _served_unless_refused(p.post("/v1/messages/count_tokens", body), (404, 405), "Not Found")


def _invocations(p: Probe) -> bool:
    body = {"prompt": "Hello", "max_tokens": _PROBE_TOKENS}
    return isinstance(_json(p.post("/invocations", body)).get("choices"), list)


def _model_extras(p: Probe) -> bool:
    entries = _json(p.client.get("/v1/models")).get("data") or []
    return any(
        isinstance(e, dict) and e.get("id") == p.model and isinstance(e.get("max_model_len"), int) for e in entries
    )


PROBED: dict[str, tuple[str, Callable[[Probe], bool]]] = {
    "completions": ("serves /v1/completions", _completions),
    "chat": ("serves /v1/chat/completions (the model has a chat template)", _chat),
    "logprobs": ("returns logprobs", _logprobs),
    "response_format": ("enforces OpenAI's response_format json_schema", _response_format),
    "tools": ("parses tool calls (vLLM: --enable-auto-tool-choice --tool-call-parser)", _tools),
    "lora": ("serves LoRA adapters listed with their parent (vLLM: --enable-lora --lora-modules)", _lora),
    "vision": ("passes image content parts to a vision-language model", _vision),
    "embeddings": ("serves /v1/embeddings: a pooling model, not one that generates text", _embeddings),
    "auth": ("requires an API key on /v1 (vLLM: --api-key)", _auth),
    "responses": ("serves OpenAI's Responses API (/v1/responses)", _responses),
    "responses_store": ("stores responses for retrieval (vLLM: VLLM_ENABLE_RESPONSES_API_STORE=1)", _responses_store),
    "messages": ("serves Anthropic's Messages API (/v1/messages)", _messages),
    "count_tokens": ("serves Anthropic's /v1/messages/count_tokens (vLLM: since 0.13)", _count_tokens),
    "pooling": ("serves vLLM's /pooling, /score and /rerank beside /v1/embeddings", _pooling),
    "classify": ("serves vLLM's /classify: a sequence-classification model", _classify),
    "lora_runtime": ("loads adapters at runtime (vLLM: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)", _lora_runtime),
    "adapters": ("serves SageMaker's /adapters routes (vLLM: with runtime LoRA updating)", _adapters),
}
VLLM_ONLY: dict[str, tuple[str, Callable[[Probe], bool]]] = {
    "tokenize": ("serves vLLM's /tokenize and /detokenize", _tokenize),
    "metrics": ("serves vLLM's Prometheus /metrics", _metrics),
    "health": ("serves vLLM's /health (200, empty body)", _health),
    "ping": ("serves vLLM's /ping", _ping),
    "version": ("serves vLLM's /version", _vllm),
    "vllm_sampling": ("honours vLLM's sampling fields (ignore_eos, min_tokens, top_k, ...)", _vllm_sampling),
    "structured_outputs": ("enforces vLLM's structured_outputs constraints", _structured_outputs),
    "return_token_ids": ("returns token ids on request (vLLM's return_token_ids, since 0.10.2)", _return_token_ids),
    "continuous_usage_stats": (
        "puts usage on every streamed chunk (vLLM's continuous_usage_stats)",
        _continuous_usage_stats,
    ),
    "model_extras": ("lists vLLM's model-entry fields (max_model_len, root, parent)", _model_extras),
    "chat_batch": ("serves vLLM's /v1/chat/completions/batch (a 404 route on older releases)", _chat_batch),
    "invocations": ("serves vLLM's SageMaker route /invocations", _invocations),
}
# vLLM's own features that older releases lack: probed by effect on vLLM too, never assumed.
SINCE_A_RELEASE = frozenset({"return_token_ids", "chat_batch"})
CAPABILITIES: dict[str, tuple[str, Callable[[Probe], bool]]] = {
    **PROBED,
    "vllm": ("is vLLM (GET /version answers {'version': ...})", _vllm),
    **VLLM_ONLY,
}


def has(server: VllmServer, client: httpx.Client, name: str, overrides: dict[str, bool]) -> bool:
    """Whether `server` has capability `name`: an override, else a probe cached on the server."""
    if name in overrides:
        return overrides[name]
    if name not in server.capabilities:
        probe = Probe(server, client, lambda other: has(server, client, other, overrides))
        if name in VLLM_ONLY and name not in SINCE_A_RELEASE and probe.has("vllm"):
            server.capabilities[name] = True  # vLLM's own feature: its checks judge it
        else:
            server.capabilities[name] = CAPABILITIES[name][1](probe)
    return server.capabilities[name]


def require(server: VllmServer, client: httpx.Client, name: str, overrides: dict[str, bool]) -> None:
    """Raise Unsupported unless `server` has capability `name`."""
    if has(server, client, name, overrides):
        return
    why = CAPABILITIES[name][0]
    if name in VLLM_ONLY and not has(server, client, "vllm", overrides):
        why += "; the server is not vLLM (no /version) and did not show it"
    raise Unsupported(f"unsupported: {server.model} at {server.base_url} lacks '{name}' ({why})")
