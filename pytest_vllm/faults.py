"""The fault catalogue: realistic server bugs, each a `Fault` for the fault proxy (proxy.py).

Every fault imitates a bug of the kind OpenAI-compatible servers (vLLM among them) and the
gateways in front of them have shipped; its docstring's first line says which. A fault changes
only the exchanges its bug touches, so the capability probes of a run still find the server's
features (a fault never turns a check into "unsupported"). `FAULTS` maps a fault's name to its
class; `make(name, setup)` builds one for a run.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from dataclasses import dataclass
from typing import ClassVar

from pytest_vllm import proxy
from pytest_vllm.proxy import Request, Response


@dataclass(frozen=True)
class Setup:
    """What some faults need to know about the server behind the proxy."""

    model: str
    api_key: str | None = None
    adapters: tuple[str, ...] = ()


class Fault(proxy.Fault):
    """Base of the catalogue's faults: `setup` (set by `make`) describes the server behind the proxy."""

    setup: Setup


FAULTS: dict[str, type[Fault]] = {}


def fault(cls: type[Fault]) -> type[Fault]:
    """Register `cls` under its `name`; each fault's docstring names the real bug it imitates."""
    assert cls.__doc__ and cls.name not in FAULTS, cls
    FAULTS[cls.name] = cls
    return cls


def make(name: str, setup: Setup) -> Fault:
    """A fresh instance of fault `name` (faults may keep state) for the server `setup` describes."""
    instance = FAULTS[name]()
    instance.setup = setup
    return instance


def describe(name: str) -> str:
    """The real-world bug fault `name` imitates (its docstring's first line)."""
    return (FAULTS[name].__doc__ or "").strip().splitlines()[0]


CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


def generation(req: Request) -> bool:
    return req.path in (CHAT, COMPLETIONS)


def choices(resp: Response) -> list[dict]:
    """The choices of a 200 generation answer (none for anything else)."""
    body = resp.json
    return (body.get("choices") or []) if isinstance(body, dict) and resp.status == 200 else []


def _has(value: object, key: str, expected: str) -> bool:
    return isinstance(value, dict) and value.get(key) == expected


class RequestFields(Fault):
    """Base: drops `drop` from generation requests (the field never reaches the engine)."""

    drop: tuple[str, ...] = ()
    paths: tuple[str, ...] = (CHAT, COMPLETIONS)

    def request(self, req: Request) -> None:
        if req.path in self.paths:
            for key in self.drop:
                req.fields().pop(key, None)


def request_fields(name: str, doc: str, *fields: str, paths: tuple[str, ...] = RequestFields.paths) -> None:
    """Register fault `name`, the bug `doc` describes: `fields` dropped from the requests to `paths`."""
    fault(type(name, (RequestFields,), {"name": name, "__doc__": doc, "drop": fields, "paths": paths}))


class ChunkFault(Fault):
    """Base: rewrites each JSON chunk of a stream with `chunk(req, chunk)`; [DONE] passes."""

    def event(self, req: Request, payload: str) -> list[str]:
        if payload == "[DONE]":
            return [payload]
        chunk = json.loads(payload)
        self.chunk(req, chunk)
        return [json.dumps(chunk)]

    def chunk(self, req: Request, chunk: dict) -> None:
        raise NotImplementedError


# --- auth ---------------------------------------------------------------------------------------


@fault
class AnyKeyAccepted(Fault):
    """A gateway that checks only that a Bearer token is present, not that it is the server's key."""

    name = "any-bearer-key-accepted"

    def request(self, req: Request) -> None:
        if req.headers.get("authorization", "").startswith("Bearer "):
            req.headers["authorization"] = f"Bearer {self.setup.api_key}"


@fault
class MetricsBehindKey(Fault):
    """A reverse proxy that puts every path behind the API key, so Prometheus cannot scrape /metrics."""

    name = "metrics-behind-the-key"

    def request(self, req: Request) -> Response | None:
        if req.path == "/metrics" and req.headers.get("authorization") != f"Bearer {self.setup.api_key}":
            return Response.of_json(401, {"error": "Unauthorized"})
        return None


# --- chat and completions: ignored parameters, wrong counts -------------------------------------


@fault
class MaxCompletionTokensIgnored(Fault):
    """`max_completion_tokens` ignored (only the legacy `max_tokens` read), so the default 16 applies."""

    name = "max_completion_tokens-ignored"

    def request(self, req: Request) -> None:
        fields = req.fields()
        if req.path == CHAT and "max_completion_tokens" in fields:
            del fields["max_completion_tokens"]
            fields["max_tokens"] = 16


@fault
class SystemMessageDropped(Fault):
    """A chat template (or gateway) that silently drops the system message."""

    name = "system-message-dropped"

    def request(self, req: Request) -> None:
        fields = req.fields()
        if req.path == CHAT and isinstance(fields.get("messages"), list):
            fields["messages"] = [m for m in fields["messages"] if not _has(m, "role", "system")]


class _UsageOffByOne(Fault):
    """One token too many in `usage.<counted>` (and in total_tokens) of every generation."""

    counted = ""

    def response(self, req: Request, resp: Response) -> Response:
        if generation(req) and resp.status == 200 and isinstance(resp.json, dict) and resp.json.get("usage"):
            usage = resp.json["usage"]
            usage[self.counted] += 1
            usage["total_tokens"] += 1
        return resp


@fault
class CompletionTokensOffByOne(_UsageOffByOne):
    """usage.completion_tokens counts the stop/EOS token as well: one too many."""

    name = "completion_tokens-off-by-one"
    counted = "completion_tokens"


@fault
class PromptTokensCountBos(_UsageOffByOne):
    """usage.prompt_tokens counts a BOS token the prompt never got: one too many."""

    name = "prompt_tokens-off-by-one"
    counted = "prompt_tokens"


@fault
class ChatLogprobsInCompletionsFormat(Fault):
    """Chat logprobs sent in the completions format (tokens/token_logprobs), a past vLLM regression."""

    name = "chat-logprobs-in-completions-format"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path != CHAT:
            return resp
        for choice in choices(resp):
            content = (choice.get("logprobs") or {}).get("content")
            if content:
                choice["logprobs"] = {
                    "tokens": [e["token"] for e in content],
                    "token_logprobs": [e["logprob"] for e in content],
                    "top_logprobs": [{a["token"]: a["logprob"] for a in e["top_logprobs"]} for e in content],
                    "text_offset": [0] * len(content),
                }
        return resp


@fault
class LogprobsOfProcessedLogits(Fault):
    """Logprobs of the logits after a temperature (0.7), not of the raw ones: every logprob off, the tokens right.

    As vLLM's `--logprobs-mode processed_logprobs` reports them where a sampler tempers even greedy requests. Each
    logprob of a /v1/completions answer is divided by the temperature (log_softmax of the tempered logits differs
    from that by a constant a position, which the top logprobs alone cannot give)."""

    name = "logprobs-of-processed-logits"
    TEMPERATURE = 0.7

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == COMPLETIONS:
            for choice in choices(resp):
                logprobs = choice.get("logprobs") or {}
                logprobs["token_logprobs"] = [self._tempered(v) for v in logprobs.get("token_logprobs") or []]
                logprobs["top_logprobs"] = [
                    {token: self._tempered(v) for token, v in top.items()} if top else top
                    for top in logprobs.get("top_logprobs") or []
                ]
        return resp

    def _tempered(self, logprob: float | None) -> float | None:
        return None if logprob is None else logprob / self.TEMPERATURE


@fault
class AlwaysGreedy(Fault):
    """Sampling ignored: every generation decoded greedily (temperature 0), whatever it asks for."""

    name = "always-greedy"

    def request(self, req: Request) -> None:
        if generation(req) and "temperature" in req.fields():
            req.fields()["temperature"] = 0


@fault
class ToolChoiceNoneAsAuto(Fault):
    """`tool_choice: "none"` sent on as "auto" (a gateway that maps every tool_choice it does not know)."""

    name = "tool_choice-none-as-auto"

    def request(self, req: Request) -> None:
        if req.path == CHAT and req.fields().get("tool_choice") == "none":
            req.fields()["tool_choice"] = "auto"


@fault
class ToolStrictDropped(Fault):
    """`strict` dropped from tool definitions (a gateway that rewrites tools without it): arguments
    are no longer held to the tool's schema."""

    name = "tool-strict-dropped"

    def request(self, req: Request) -> None:
        if req.path in (CHAT, "/v1/responses", "/v1/messages"):
            for tool in req.fields().get("tools") or []:
                tool.pop("strict", None)
                (tool.get("function") or {}).pop("strict", None)


@fault
class ConcurrentAnswersCrossed(Fault):
    """Under load, a completion goes to the wrong client: overlapping requests swap answers (a
    gateway's connection-pool mix-up)."""

    name = "concurrent-answers-crossed"

    def __init__(self) -> None:
        self.in_flight = 0
        self.previous: list | None = None

    def request(self, req: Request) -> None:
        if req.path == COMPLETIONS:
            req.ctx["overlapped"] = self.in_flight > 0
            self.in_flight += 1

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == COMPLETIONS:
            self.in_flight -= 1
            if choices(resp):
                mine = resp.json["choices"]
                if req.ctx["overlapped"] and self.previous is not None:
                    resp.json["choices"] = self.previous
                self.previous = mine
        return resp


@fault
class StreamsBrokenUnderLoad(Fault):
    """Streams that overlap others break (llama.cpp's server under 16 streams at once): each is cut off
    mid-answer, or ends without its finish_reason and usage, as timing decides (`symptom` picks one)."""

    name = "streams-broken-under-load"
    SYMPTOMS = ("cut", "unfinished")

    def __init__(self, symptom: str = "cut") -> None:
        assert symptom in self.SYMPTOMS, symptom
        self.symptom = symptom
        self.in_flight = 0

    def request(self, req: Request) -> None:
        if generation(req) and req.fields().get("stream"):
            req.ctx["broken"] = self.in_flight > 0
            self.in_flight += 1

    def event(self, req: Request, payload: str) -> list[str]:
        if not req.ctx.get("broken") or (payload == "[DONE]" and self.symptom == "unfinished"):
            return [payload]
        if payload == "[DONE]":
            return []
        chunk = json.loads(payload)
        for choice in chunk.get("choices") or []:
            choice["finish_reason"] = None
        return [] if chunk.get("usage") else [json.dumps(chunk)]

    def stream_end(self, req: Request) -> bytes:
        if "broken" in req.ctx:
            self.in_flight -= 1
        if req.ctx.get("broken") and self.symptom == "cut":
            raise ConnectionAbortedError("streams-broken-under-load: the stream is cut off")  # closes the connection
        return b""


@fault
class DetokenizeDropsACharacter(Fault):
    """/detokenize loses the last character of the text (an off-by-one in the decoder's offsets)."""

    name = "detokenize-drops-a-character"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/detokenize" and resp.status == 200:
            resp.json["prompt"] = resp.json["prompt"][:-1]
        return resp


@fault
class StopReasonDropped(Fault):
    """vLLM's `stop_reason` dropped by a response model that keeps only OpenAI's fields."""

    name = "stop_reason-dropped"

    def response(self, req: Request, resp: Response) -> Response:
        if generation(req):
            for choice in choices(resp):
                choice.pop("stop_reason", None)
        return resp


@fault
class BatchIndexZero(Fault):
    """Choices of a batch (a prompt list, or conversations) all carry index 0 (each sub-request numbered on its own)."""

    name = "batch-choices-all-index-0"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path in (COMPLETIONS, "/v1/chat/completions/batch"):
            for choice in choices(resp):
                choice["index"] = 0
        return resp


# --- request fields accepted but dropped ---------------------------------------------------------

request_fields(
    "stop-ignored", "Stop strings accepted but never handed to the sampler: generation runs past them.", "stop"
)
request_fields("seed-ignored", "A per-request `seed` ignored: seeded sampling is not reproducible.", "seed")
request_fields("n-ignored", "`n` ignored: one choice comes back however many were asked for.", "n")
request_fields(
    "echo-ignored",
    "`echo` ignored on /v1/completions: the prompt is not prepended to the text.",
    "echo",
    paths=(COMPLETIONS,),
)
request_fields("logit_bias-ignored", "`logit_bias` accepted but not applied to the logits.", "logit_bias")
request_fields(
    "min_tokens-ignored", "`min_tokens` ignored: a stop token ends generation before the minimum.", "min_tokens"
)
request_fields(
    "top_k-ignored", "vLLM's `top_k` accepted but not applied: sampling draws from the whole vocabulary.", "top_k"
)
request_fields(
    "allowed_token_ids-ignored",
    "vLLM's `allowed_token_ids` accepted but not applied: any token can be generated.",
    "allowed_token_ids",
)
request_fields(
    "beam-search-ignored",
    "vLLM's `use_beam_search` accepted but not applied: the request is sampled as usual.",
    "use_beam_search",
)
request_fields(
    "stream_interval-ignored",
    "vLLM's `stream_interval` accepted but not applied: every token comes in a chunk of its own.",
    "stream_interval",
)
request_fields(
    "request_id-dropped",
    "vLLM's `request_id` dropped by a gateway: the response carries an id of the server's own.",
    "request_id",
)
request_fields(
    "chat_template-ignored",
    "A request's own `chat_template` accepted but not applied: the model's template renders it.",
    "chat_template",
    paths=(CHAT,),
)
request_fields(
    "penalties-ignored",
    "`frequency_penalty` and `presence_penalty` accepted but not applied (a gateway that drops them).",
    "frequency_penalty",
    "presence_penalty",
)
request_fields(
    "skip_special_tokens-dropped",
    "vLLM's `skip_special_tokens` dropped (a gateway that forwards OpenAI's fields only): special tokens vanish.",
    "skip_special_tokens",
)
request_fields(
    "ignore_eos-dropped",
    "vLLM's `ignore_eos` dropped (a gateway that forwards OpenAI's fields only): generation stops at EOS.",
    "ignore_eos",
)
request_fields(
    "structured-outputs-not-enforced",
    "Structured-output constraints accepted (200) but never handed to the engine: output unconstrained.",
    "structured_outputs",
    "response_format",
)
request_fields(
    "classify-use_activation-ignored",
    "/classify ignores `use_activation: false` and always answers probabilities.",
    "use_activation",
    paths=("/classify",),
)
request_fields(
    "embedding-dimensions-ignored",
    "`dimensions` ignored on /v1/embeddings: the full-length vector comes back.",
    "dimensions",
    paths=("/v1/embeddings",),
)


# --- errors and status codes ---------------------------------------------------------------------


@fault
class ValidationErrorAs500(Fault):
    """Request validation errors escape as 500 Internal Server Error instead of 400."""

    name = "400-answered-as-500"

    def response(self, req: Request, resp: Response) -> Response:
        error = resp.json.get("error") if isinstance(resp.json, dict) else None
        refused = resp.status == 400 or (resp.status == 404 and isinstance(error, dict))  # e.g. an unknown model
        if refused and req.path.startswith("/v1/"):
            if isinstance(error, dict):
                error.update(type="InternalServerError", code=500)
            resp.status = 500
        return resp


@fault
class OutOfRangeClamped(Fault):
    """Out-of-range sampling values silently clamped instead of rejected: 200 for invalid input."""

    name = "out-of-range-clamped"
    RANGES: ClassVar = {"temperature": (0.0, 2.0), "top_p": (0.01, 1.0)}

    def request(self, req: Request) -> None:
        fields = req.fields()
        if generation(req):
            for key, (low, high) in self.RANGES.items():
                if isinstance(fields.get(key), (int, float)) and not isinstance(fields[key], bool):
                    fields[key] = min(max(fields[key], low), high)


@fault
class FlatErrorShape(Fault):
    """Errors in vLLM's pre-0.10.1 flat shape {"object": "error", "message", ...}, not {"error": {...}}."""

    name = "flat-error-body"

    def response(self, req: Request, resp: Response) -> Response:
        if resp.status >= 400 and isinstance(resp.json, dict) and isinstance(resp.json.get("error"), dict):
            resp.json = {"object": "error", **resp.json["error"]}
        return resp


@fault
class WrongMethodIs404(Fault):
    """A known route called with the wrong method answers 404 Not Found instead of 405."""

    name = "405-answered-as-404"

    def response(self, req: Request, resp: Response) -> Response:
        if resp.status == 405:
            resp.status = 404
            resp.json = {"detail": "Not Found"}
            resp.headers.pop("allow", None)
        return resp


# --- health, models, tokenize, metrics -----------------------------------------------------------


@fault
class HealthJsonBody(Fault):
    """/health answers a JSON status body ({"status": "ok"}) where vLLM promises an empty one."""

    name = "health-json-body"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/health" and resp.status == 200:
            return Response.of_json(200, {"status": "ok"})
        return resp


@fault
class DevVersion(Fault):
    """/version says "dev": a build installed without its version metadata."""

    name = "version-dev"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/version" and resp.status == 200:
            resp.json = {"version": "dev"}
        return resp


@fault
class ModelCreatedString(Fault):
    """/v1/models gives `created` as an ISO date string instead of a Unix timestamp."""

    name = "models-created-as-string"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/v1/models" and resp.status == 200:
            for entry in resp.json["data"]:
                entry["created"] = "2026-11-01T00:00:00Z"
        return resp


@fault
class MaxModelLenMissing(Fault):
    """/v1/models entries lose vLLM's `max_model_len` (a model card built without it)."""

    name = "models-max_model_len-missing"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/v1/models" and resp.status == 200:
            for entry in resp.json["data"]:
                entry.pop("max_model_len", None)
        return resp


@fault
class TokenizeCountOff(Fault):
    """/tokenize `count` counts a special token that `tokens` does not hold: off by one."""

    name = "tokenize-count-off-by-one"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/tokenize" and resp.status == 200:
            resp.json["count"] += 1
        return resp


@fault
class TokenizeWithoutGenerationPrompt(Fault):
    """/tokenize renders messages without the generation prompt that chat completions add."""

    name = "tokenize-messages-without-generation-prompt"

    def request(self, req: Request) -> None:
        fields = req.fields()
        if req.path == "/tokenize" and "messages" in fields:
            fields.setdefault("add_generation_prompt", False)


@fault
class MetricRenamed(Fault):
    """A counter renamed between releases (vllm:prompt_tokens → vllm:prefill_tokens): dashboards go blank."""

    name = "metric-renamed"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/metrics" and resp.status == 200:
            resp.body = re.sub(rb"vllm:prompt_tokens_(total|created)\b", rb"vllm:prefill_tokens_\1", resp.body)
        return resp


@fault
class MetricsStale(Fault):
    """/metrics served from a cache that is never refreshed: the counters never move."""

    name = "metrics-stale"
    cached: Response | None = None

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/metrics" and resp.status == 200:
            if self.cached is None:
                self.cached = resp
            return Response(200, self.cached.headers, self.cached.body)
        return resp


# --- streaming -----------------------------------------------------------------------------------


@fault
class DoneMissing(Fault):
    """The stream ends without `data: [DONE]` (the connection simply closes)."""

    name = "sse-done-missing"

    def event(self, req: Request, payload: str) -> list[str]:
        return [] if payload == "[DONE]" else [payload]


@fault
class ResponsesEventsUnnumbered(Fault):
    """Responses API events all numbered 0 (a gateway re-encoding each event on its own)."""

    name = "responses-events-unnumbered"

    def event(self, req: Request, payload: str) -> list[str]:
        if req.path != "/v1/responses" or not payload.startswith("{"):
            return [payload]
        return [json.dumps({**json.loads(payload), "sequence_number": 0})]


@fault
class ResponsesStatusRewritten(Fault):
    """A Response's status set apart from what happened (a gateway that builds its own envelope): a cut
    answer reported 'completed', its incomplete_details dropped, and a finished one 'in_progress'."""

    name = "responses-status-rewritten"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/v1/responses" and resp.status == 200 and isinstance(resp.json, dict):
            resp.json["status"] = "completed" if resp.json.get("status") == "incomplete" else "in_progress"
            resp.json["incomplete_details"] = None
        return resp


@fault
class MessagesStopReasonNull(Fault):
    """A Messages API reply with stop_reason null (built before generation was known to end)."""

    name = "messages-stop_reason-null"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/v1/messages" and resp.status == 200 and isinstance(resp.json, dict):
            resp.json["stop_reason"] = None
        return resp


@fault
class SingleNewlineFraming(Fault):
    """SSE events separated by a single newline, not a blank line (a hand-written stream writer)."""

    name = "sse-single-newline-framing"

    def frame(self, req: Request, payload: str) -> bytes:
        return f"data: {payload}\n".encode()


@fault
class UsageOnEveryChunk(Fault):
    """`include_usage` puts usage on every chunk instead of one final chunk (a past vLLM regression)."""

    name = "stream-usage-on-every-chunk"

    def request(self, req: Request) -> None:
        options = req.fields().get("stream_options")
        if generation(req) and isinstance(options, dict) and options.get("include_usage"):
            options["continuous_usage_stats"] = True


@fault
class RoleInEveryDelta(ChunkFault):
    """Every streamed chat delta repeats `role: assistant`, not only the first."""

    name = "stream-role-in-every-delta"

    def chunk(self, req: Request, chunk: dict) -> None:
        for choice in chunk.get("choices") or []:
            if isinstance(choice.get("delta"), dict):
                choice["delta"]["role"] = "assistant"


@fault
class FirstTokenLost(ChunkFault):
    """The first generated token of each streamed choice is lost (its text never sent)."""

    name = "stream-first-token-lost"

    def chunk(self, req: Request, chunk: dict) -> None:
        seen = req.ctx.setdefault("started", set())
        for choice in chunk.get("choices") or []:
            part = choice.get("delta") if isinstance(choice.get("delta"), dict) else choice
            key = "content" if "delta" in choice else "text"
            if choice.get("index") not in seen and part.get(key):
                seen.add(choice.get("index"))
                part[key] = ""


@fault
class StreamCreatedString(ChunkFault):
    """Streamed chunks give `created` as a string instead of an integer timestamp."""

    name = "stream-created-as-string"

    def chunk(self, req: Request, chunk: dict) -> None:
        if "created" in chunk:
            chunk["created"] = str(chunk["created"])


# --- structured outputs and tools ----------------------------------------------------------------


@fault
class ToolCallsNotParsed(Fault):
    """Tool calls not parsed: the model's raw <tool_call> text comes back as content, no tool_calls."""

    name = "tool-calls-not-parsed"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path != CHAT:
            return resp
        for choice in choices(resp):
            message = choice.get("message") or {}
            calls = message.pop("tool_calls", None) or []
            if calls:
                message["content"] = (message.get("content") or "") + "".join(
                    '<tool_call>\n{{"name": {}, "arguments": {}}}\n</tool_call>'.format(
                        json.dumps(c["function"]["name"]), c["function"]["arguments"]
                    )
                    for c in calls
                )
                choice["finish_reason"] = "stop"
        return resp


@fault
class TruncatedCallIsToolCalls(ChunkFault):
    """finish_reason 'tool_calls' for a tool call cut by max_tokens (a past vLLM bug), not 'length'."""

    name = "truncated-call-finishes-tool_calls"

    def _fix(self, req: Request, choice: dict) -> None:
        if req.fields().get("tools") and choice.get("finish_reason") == "length":
            choice["finish_reason"] = "tool_calls"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == CHAT:
            for choice in choices(resp):
                self._fix(req, choice)
        return resp

    def chunk(self, req: Request, chunk: dict) -> None:
        for choice in chunk.get("choices") or []:
            self._fix(req, choice)


@fault
class StreamedArgumentsNone(ChunkFault):
    """Streamed tool-call argument fragments sent as null (non-streamed calls fine), a past vLLM bug."""

    name = "streamed-tool-arguments-null"

    def chunk(self, req: Request, chunk: dict) -> None:
        for choice in chunk.get("choices") or []:
            for call in (choice.get("delta") or {}).get("tool_calls") or []:
                if isinstance(call.get("function"), dict) and "arguments" in call["function"]:
                    call["function"]["arguments"] = None


# --- LoRA ----------------------------------------------------------------------------------------


@fault
class LoraNotRouted(Fault):
    """Requests naming a LoRA adapter answered by the base model (adapter not applied), name echoed."""

    name = "lora-adapter-not-applied"

    def request(self, req: Request) -> None:
        fields = req.fields()
        if generation(req) and fields.get("model") in self.setup.adapters:
            req.ctx["asked"] = fields["model"]
            fields["model"] = self.setup.model

    def response(self, req: Request, resp: Response) -> Response:
        if "asked" in req.ctx and isinstance(resp.json, dict) and "model" in resp.json:
            resp.json["model"] = req.ctx["asked"]
        return resp


@fault
class RuntimeLoraNotListed(Fault):
    """A LoRA adapter loaded at runtime is served but missing from /v1/models (a past vLLM regression)."""

    name = "runtime-lora-not-listed"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/v1/models" and resp.status == 200:
            startup = (self.setup.model, *self.setup.adapters)
            resp.json["data"] = [entry for entry in resp.json["data"] if entry.get("id") in startup]
        return resp


@fault
class UnknownModelFallsBack(Fault):
    """An unknown model name falls back to the default model (200) instead of 404 Not Found."""

    name = "unknown-model-falls-back"

    def request(self, req: Request) -> None:
        fields = req.fields()
        known = (self.setup.model, *self.setup.adapters)
        if generation(req) and isinstance(fields.get("model"), str) and fields["model"] not in known:
            fields["model"] = self.setup.model


# --- vision and embeddings -----------------------------------------------------------------------


@fault
class ImagePartsDropped(Fault):
    """Image content parts dropped on the way (a text-only gateway flattens the content list)."""

    name = "image-parts-dropped"

    def request(self, req: Request) -> None:
        messages = req.fields().get("messages")
        if req.path != CHAT or not isinstance(messages, list):
            return
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("content"), list):
                message["content"] = [part for part in message["content"] if not _has(part, "type", "image_url")]


@fault
class Base64Float64(Fault):
    """base64 embeddings encoded as float64 (numpy's default dtype) instead of float32."""

    name = "embedding-base64-float64"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/v1/embeddings" and resp.status == 200 and req.fields().get("encoding_format") == "base64":
            for item in resp.json["data"]:
                raw = base64.b64decode(item["embedding"])
                values = struct.unpack(f"<{len(raw) // 4}f", raw)
                item["embedding"] = base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode()
        return resp


@fault
class EmbeddingsOutOfOrder(Fault):
    """A batch's embeddings returned in completion order (reversed here) with their index renumbered."""

    name = "embedding-batch-out-of-order"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/v1/embeddings" and resp.status == 200 and len(resp.json.get("data") or []) > 1:
            data = resp.json["data"][::-1]
            for index, item in enumerate(data):
                item["index"] = index
            resp.json["data"] = data
        return resp


@fault
class RerankUnsorted(Fault):
    """/rerank results sorted worst first (ascending relevance) instead of best first."""

    name = "rerank-sorted-ascending"

    def response(self, req: Request, resp: Response) -> Response:
        if req.path == "/rerank" and resp.status == 200:
            resp.json["results"].sort(key=lambda r: r["relevance_score"])
        return resp
