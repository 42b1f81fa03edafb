"""Fuzzing the generation routes with Hypothesis: sampling parameters and request bodies.

Valid sampling parameters must be served (200, the asked-for number of choices, the token
budget and stop strings honoured), streamed as well (SSE framing, each choice finishing once,
the final usage within the budget). Arbitrary values, random JSON bodies and bodies whose fields
follow the vendors' request schemas (and vLLM's own, from its /openapi.json) on completions,
chat, Responses and Messages must never cause a server error: 200 or a 4xx, and the server
still serves. vLLM's own sampling fields are drawn only for a server that honours them.
(Response shapes are checked against the vendors' schemas in test_schema.py and beside each API.)
"""

import json

import pytest
from hypothesis import Phase, given

from pytest_vllm import strategies
from pytest_vllm.checks import openapi
from pytest_vllm.checks.sse import choice_chunks, join_choices, read_stream
from pytest_vllm.verdicts import fingerprint

# A failure shrinks to a minimal request: the check's last request, which the report repeats as curl.
FUZZ = {"max_examples": 10, "deadline": None, "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]}
FUZZ_VALID = {**FUZZ, "max_examples": 6}  # these generate tokens
MAX_TOKENS = 6
ROUTES = {
    "completions": ("/v1/completions", {"prompt": "Hello, my name is"}),
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello"}]}),
}
# Schema-shaped bodies: (path, base body, the vendor and its request schema, vLLM's own request
# schema in its /openapi.json, the field that caps the tokens generated).
SCHEMA_ROUTES = {
    "completions": (*ROUTES["completions"], ("openai", "CreateCompletionRequest"), "CompletionRequest", "max_tokens"),
    "chat": (*ROUTES["chat"], ("openai", "CreateChatCompletionRequest"), "ChatCompletionRequest", "max_tokens"),
    "responses": (
        "/v1/responses",
        {"input": "Hello"},
        ("openai", "CreateResponse"),
        "ResponsesRequest",
        "max_output_tokens",
    ),
    "messages": (
        "/v1/messages",
        {"messages": [{"role": "user", "content": "Hello"}]},
        ("anthropic", "CreateMessageParams"),
        "AnthropicMessagesRequest",
        "max_tokens",
    ),
}


def over(routes):
    """Parametrize a check by `route` over `routes`, each needing the capability of its name."""
    return pytest.mark.parametrize(
        "route", [pytest.param(name, marks=pytest.mark.vllm_requires(name), id=name) for name in routes]
    )


route = over(ROUTES)


def _post(http, path: str, body: dict):
    """POST `body` as ASCII JSON (lone surrogates escaped, so any drawn text can be sent)."""
    return http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def _assert_no_server_error(vllm, server, response) -> None:
    sent = response.request.content.decode()[:600]
    fingerprint(f"answered {response.status_code}")  # the failure's kind: which example drew it may vary
    assert response.status_code < 500, (
        f"a request must be answered 200 or 4xx, never {response.status_code} (a server error); "
        f"sent {sent}; got {response.text[:400]}"
    )
    route, status = vllm.liveness(server)
    assert status == 200, f"{route} answered {status} after sending {sent}"


def _text(choice: dict) -> str:
    return choice["text"] if "text" in choice else choice["message"]["content"] or ""


@route
def test_valid_sampling_params_are_served(vllm, vllm_http, vllm_server, vllm_fuzz, route):
    path, base = ROUTES[route]
    honoured = vllm.has(vllm_server, "vllm_sampling")
    ranges = "OpenAI's spec and vLLM's SamplingParams" if honoured else "OpenAI's spec"

    @vllm_fuzz(**FUZZ_VALID)
    @given(params=strategies.sampling_params(max_tokens=MAX_TOKENS, max_n=2, vllm=honoured))
    def served(params):
        response = vllm_http.post(path, json={"model": vllm_server.model, **base, **params})
        assert response.status_code == 200, (
            f"every value here is in the range {ranges} allow, so "
            f"it must be served; sent {params}, got {response.status_code}: {response.text[:400]}"
        )
        body = response.json()
        _assert_served_as_asked(params, body["choices"], body["usage"])

    served()


def _assert_served_as_asked(params: dict, choices: list, usage: dict) -> None:
    """The answer to valid `params` keeps n, the token budget and the stop strings. The fingerprint
    says which broke; the reason also holds the example that showed it (which may vary by run)."""
    n = params.get("n", 1)
    indices = sorted(choice["index"] for choice in choices)
    fingerprint(f"n={n} asks for choices 0..{n - 1}, got indices {indices}")
    assert indices == list(range(n)), f"n={n} asks for choices 0..{n - 1}, got indices {indices} (sent {params})"
    fingerprint("usage.completion_tokens over n x max_tokens")
    assert usage["completion_tokens"] <= n * params["max_tokens"], (
        f"max_tokens={params['max_tokens']} per choice (n={n}) bounds usage.completion_tokens, got {usage} "
        f"(sent {params})"
    )
    stops = [params["stop"]] if isinstance(params.get("stop"), str) else params.get("stop", [])
    fingerprint("a stop string left in the text")
    for choice in choices:
        found = [stop for stop in stops if stop in _text(choice)]
        assert not found, (
            f"generation ends at the first stop string and leaves it out of the text; "
            f"choice {choice['index']} contains {found}: {_text(choice)!r} (sent {params})"
        )


@route
def test_valid_sampling_params_stream_as_served(vllm, vllm_http, vllm_server, vllm_fuzz, route):
    path, base = ROUTES[route]
    honoured = vllm.has(vllm_server, "vllm_sampling")

    @vllm_fuzz(**FUZZ_VALID)
    @given(params=strategies.sampling_params(max_tokens=MAX_TOKENS, max_n=2, vllm=honoured))
    def streamed(params):
        body = {"model": vllm_server.model, **base, **params, "stream": True, "stream_options": {"include_usage": True}}
        with vllm_http.stream("POST", path, json=body) as response:
            chunks = read_stream(response)
        per_choice = {index: [p.get("finish_reason") for p in parts] for index, parts in choice_chunks(chunks).items()}
        unfinished = {i: r for i, r in per_choice.items() if [x for x in r if x] != [r[-1]] or not r[-1]}
        fingerprint("a streamed choice that does not finish once, on its last chunk")
        assert not unfinished, f"each streamed choice finishes once, on its last chunk: {unfinished} (sent {params})"
        joined = join_choices(chunks)
        _assert_served_as_asked(params, [{**c, "index": i} for i, c in joined.items()], chunks[-1]["usage"])

    streamed()


@over(SCHEMA_ROUTES)
def test_schema_shaped_bodies_are_served_or_refused(vllm, vllm_http, vllm_server, vllm_fuzz, route):
    """Fields drawn from the vendor's request schema (and vLLM's own, on vLLM), each value as its
    schema describes it: answered 200 or a 4xx, never a server error; a 200 keeps the token budget
    (and n)."""
    path, base, (vendor, vendor_name), vllm_name, budget = SCHEMA_ROUTES[route]
    schemas = [(openapi.schemas(vendor)[vendor_name], openapi.schemas(vendor))]
    if vllm.has(vllm_server, "vllm"):
        response = vllm_http.get("/openapi.json")
        assert response.status_code == 200, f"vLLM serves its OpenAPI document at /openapi.json: {response.status_code}"
        own = response.json()["components"]["schemas"]
        schemas.append((own[vllm_name], own))

    @vllm_fuzz(**FUZZ)
    @given(
        body=strategies.schema_shaped_bodies(
            base={"model": vllm_server.model, **base}, schemas=schemas, budget=budget, max_tokens=MAX_TOKENS
        )
    )
    def answered(body):
        response = _post(vllm_http, path, body)
        _assert_no_server_error(vllm, vllm_server, response)
        if response.status_code != 200:
            return
        answer = response.json()
        if "choices" in answer:
            # chat's max_completion_tokens replaces the deprecated max_tokens: either may bound it
            most = max(body[budget], body.get("max_completion_tokens") or 0)
            _assert_served_as_asked({"n": body.get("n") or 1, "max_tokens": most}, answer["choices"], answer["usage"])
        elif answer.get("usage"):  # a Response or a Message (a background response has no usage yet)
            fingerprint(f"usage.output_tokens over {budget}")
            assert answer["usage"]["output_tokens"] <= body[budget], (
                f"{budget}={body[budget]} bounds usage.output_tokens, got {answer['usage']} (sent {body})"
            )

    answered()


@route
def test_arbitrary_sampling_params_never_cause_a_server_error(vllm, vllm_http, vllm_server, vllm_fuzz, route):
    path, base = ROUTES[route]
    honoured = vllm.has(vllm_server, "vllm_sampling")

    @vllm_fuzz(**FUZZ)
    @given(params=strategies.unchecked_sampling_params(max_tokens=MAX_TOKENS, vllm=honoured))
    def answered(params):
        response = _post(vllm_http, path, {"model": vllm_server.model, **base, **params})
        _assert_no_server_error(vllm, vllm_server, response)

    answered()


@route
def test_random_bodies_never_cause_a_server_error(vllm, vllm_http, vllm_server, vllm_fuzz, route):
    path, base = ROUTES[route]

    @vllm_fuzz(**FUZZ)
    @given(body=strategies.request_bodies(base={"model": vllm_server.model, **base}, max_tokens=MAX_TOKENS))
    def answered(body):
        response = _post(vllm_http, path, body)
        _assert_no_server_error(vllm, vllm_server, response)

    answered()
