"""Hypothesis strategies for vLLM requests: sampling parameters in and out of range, random bodies.

Valid ranges are where OpenAI's spec and vLLM's `SamplingParams` agree. No strategy ever asks
for expensive work: the fields that set how much a request generates (`max_tokens`, `n`, ...)
are either small and valid or invalid (rejected before any generation). Floats are never
subnormal: a process that has loaded torch flushes them to zero, which Hypothesis refuses.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Fields whose valid values set the amount of work a request asks for.
BUDGET_FIELDS = ("max_tokens", "max_completion_tokens", "min_tokens", "n", "best_of")

# (low, high, low is excluded) of each float sampling parameter, where OpenAI and vLLM agree.
FLOAT_RANGES = {
    "temperature": (0.0, 2.0, False),
    "top_p": (0.0, 1.0, True),
    "min_p": (0.0, 1.0, False),
    "presence_penalty": (-2.0, 2.0, False),
    "frequency_penalty": (-2.0, 2.0, False),
    "repetition_penalty": (0.0, 2.0, True),
}
# vLLM's request fields beyond the float ranges, fuzzed with arbitrary values in random bodies.
OTHER_FIELDS = (
    "top_k",
    "seed",
    "stop",
    "stop_token_ids",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "prompt_logprobs",
    "echo",
    "ignore_eos",
    "skip_special_tokens",
    "include_stop_str_in_output",
    "add_special_tokens",
    "truncate_prompt_tokens",
    "allowed_token_ids",
    "bad_words",
    "suffix",
    "response_format",
    "structured_outputs",
    "tools",
    "tool_choice",
    "user",
    "priority",
    "add_generation_prompt",
    "continue_final_message",
    "chat_template_kwargs",
    "cache_salt",
    "return_token_ids",
    "messages",
    "prompt",
    "model",
)
# The sampling fields above that are vLLM's own, not OpenAI's: drawn for servers that honour them.
VLLM_SAMPLING = ("min_p", "repetition_penalty", "top_k", "min_tokens")
_INT64 = 2**63


def json_values(*, max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value: null, booleans, numbers (huge and tiny included), strings, lists, objects."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False)
        | st.text(max_size=12)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=max_leaves,
    )


def stop_strings(*, max_size: int = 3) -> st.SearchStrategy[str | list[str]]:
    """A valid `stop`: a string or up to 4 strings, from a small alphabet so that they do occur."""
    text = st.text(alphabet="ae .", min_size=1, max_size=max_size)
    return text | st.lists(text, min_size=1, max_size=4)


@st.composite
def sampling_params(draw: st.DrawFn, *, max_tokens: int = 8, max_n: int = 2, vllm: bool = True) -> dict[str, Any]:
    """A valid set of sampling parameters: each field present or not, every value in range
    (vLLM's own fields only with `vllm`).

    `n` > 1 comes with a temperature > 0 (vLLM rejects n > 1 for greedy sampling, which the
    error suite checks on its own).
    """
    params: dict[str, Any] = {"max_tokens": draw(st.integers(min_value=1, max_value=max_tokens))}
    for name, (low, high, open_low) in FLOAT_RANGES.items():
        if (vllm or name not in VLLM_SAMPLING) and draw(st.booleans()):
            params[name] = draw(st.floats(low, high, exclude_min=open_low, allow_subnormal=False))
    optional = {
        "top_k": st.sampled_from([-1, 0]) | st.integers(min_value=1, max_value=1000),
        "seed": st.integers(min_value=-_INT64, max_value=_INT64 - 1),
        "stop": stop_strings(),
        "n": st.integers(min_value=1, max_value=max_n),
    }
    for name, values in optional.items():
        if (vllm or name not in VLLM_SAMPLING) and draw(st.booleans()):
            params[name] = draw(values)
    if params.get("n", 1) > 1:
        params["temperature"] = draw(st.floats(0.1, 2.0, allow_subnormal=False))
    return params


_WRONG_TYPES = st.text(max_size=4) | st.booleans() | st.none() | st.lists(st.integers(), max_size=2)


def _rarely_mistyped(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    """A value from `values`, or one in 8 times a value of another JSON type."""
    return draw(_WRONG_TYPES) if draw(st.integers(0, 7)) == 0 else draw(values)


@st.composite
def _cheap_or_invalid(draw: st.DrawFn, *, max_value: int) -> int:
    """A budget field's value: mostly small and valid, else one no server accepts (never costly)."""
    if draw(st.integers(0, 3)):
        return draw(st.integers(1, max_value))
    return draw(st.integers(max_value=0) | st.integers(min_value=10**12))


@st.composite
def unchecked_sampling_params(draw: st.DrawFn, *, max_tokens: int = 8, vllm: bool = True) -> dict[str, Any]:
    """Sampling parameters in range or not, field by field, now and then of the wrong type
    (vLLM's own fields only with `vllm`)."""
    params: dict[str, Any] = {
        "max_tokens": _rarely_mistyped(draw, _cheap_or_invalid(max_value=max_tokens)),
    }
    for name, most in (("n", 2), ("min_tokens", max_tokens)):
        if (vllm or name not in VLLM_SAMPLING) and draw(st.booleans()):
            params[name] = _rarely_mistyped(draw, _cheap_or_invalid(max_value=most))
    numbers = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False)
    for name, (low, high, open_low) in FLOAT_RANGES.items():
        if (vllm or name not in VLLM_SAMPLING) and draw(st.booleans()):
            params[name] = _rarely_mistyped(
                draw, st.floats(low, high, exclude_min=open_low, allow_subnormal=False) | numbers
            )
    integers = st.integers(min_value=-(2**70), max_value=2**70)
    others = {"top_k": integers, "seed": integers, "stop": stop_strings() | st.lists(st.text(max_size=3))}
    for name, values in others.items():
        if (vllm or name not in VLLM_SAMPLING) and draw(st.booleans()):
            params[name] = _rarely_mistyped(draw, values)
    return params


@st.composite
def request_bodies(draw: st.DrawFn, *, base: dict[str, Any], max_tokens: int = 8) -> dict[str, Any]:
    """`base` (a valid request) with random fields added or replaced: vLLM's field names and
    random keys, with arbitrary JSON values; the budget fields stay small or invalid."""
    keys = st.sampled_from((*FLOAT_RANGES, *OTHER_FIELDS)) | st.text(max_size=10)
    fields = draw(st.dictionaries(keys, json_values(), max_size=6))
    body = {**base, **fields}
    for name in (*BUDGET_FIELDS, "stream", "stream_options"):
        body.pop(name, None)
    body["max_tokens"] = _rarely_mistyped(draw, _cheap_or_invalid(max_value=max_tokens))
    body["n"] = _rarely_mistyped(draw, _cheap_or_invalid(max_value=2))
    return body


# Schema fields a schema-shaped body leaves out: how the request is sent, and what costs tokens.
_SCHEMA_SKIPPED = (
    "model",
    "stream",
    "stream_options",
    "best_of",
    "prompt",
    "messages",
    "input",
    "max_tokens",
    "max_output_tokens",
)
_SCHEMA_DEPTH = 4


def schema_values(schema: dict, definitions: dict[str, dict], depth: int = _SCHEMA_DEPTH) -> st.SearchStrategy[Any]:
    """Values that a JSON Schema node describes, for the keywords request schemas use: `$ref` (into
    `definitions`), const, enum, anyOf/oneOf, type (with `minimum`/`maximum`, lengths and item
    counts), properties and required. Strings, lists and objects stay small; nesting stops at
    `depth`. An `exclusiveMinimum`/`exclusiveMaximum` bound is not kept: values past it are drawn
    too, and must be refused with a 4xx like any other invalid value."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return schema_values(definitions[name], definitions, depth - 1) if depth > 0 else st.none()
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    members = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")  # allOf: of one member, here
    if members:
        return st.one_of([schema_values(m, definitions, depth) for m in members])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([schema_values({**schema, "type": k}, definitions, depth) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    low = schema.get("minimum", -1000)
    high = schema.get("maximum", max(low, 0) + 1000)
    if kind == "integer":
        return st.integers(low, high)
    if kind == "number":
        return st.floats(
            float(low),
            float(high),
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
            allow_subnormal=False,
        )
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=max(schema.get("minLength", 0), 8))
    if depth <= 0:
        return st.none()
    if kind == "array" or "items" in schema:
        low = schema.get("minItems", 0)
        return st.lists(
            schema_values(schema.get("items", {}), definitions, depth - 1),
            min_size=low,
            max_size=max(low, min(schema.get("maxItems", 2), 2)),
        )
    properties = schema.get("properties") or {}
    if kind == "object" or properties:
        required = {
            k: schema_values(properties[k], definitions, depth - 1)
            for k in schema.get("required", [])
            if k in properties
        }
        optional = {k: schema_values(v, definitions, depth - 1) for k, v in properties.items() if k not in required}
        if not properties:
            return st.dictionaries(st.text(max_size=6), json_values(max_leaves=3), max_size=2)
        return st.fixed_dictionaries(required, optional=optional)
    return json_values(max_leaves=3)  # {} (any value)


def _properties(schema: dict, definitions: dict[str, dict]) -> dict[str, dict]:
    """An object schema's properties, with those of the schemas it extends (`allOf`, `$ref`)."""
    if "$ref" in schema:
        return _properties(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
    found = {}
    for member in schema.get("allOf", []):
        found.update(_properties(member, definitions))
    return {**found, **schema.get("properties", {})}


@st.composite
def schema_shaped_bodies(
    draw: st.DrawFn,
    *,
    base: dict[str, Any],
    schemas: list[tuple[dict, dict]],
    budget: str = "max_tokens",
    max_tokens: int = 8,
) -> dict[str, Any]:
    """`base` (a valid request) with up to 4 fields of the request schemas in `schemas` (pairs of
    the request's schema and the definitions its `$ref`s point into), each with a value its own
    schema describes. The budget fields stay small: `budget` (the route's cap on generated
    tokens) and max_completion_tokens at most `max_tokens`, n at most 2, logprobs counts at most 5."""
    fields: dict[str, tuple[dict, dict]] = {}
    for schema, definitions in schemas:
        for name, node in _properties(schema, definitions).items():
            if name not in _SCHEMA_SKIPPED:
                fields.setdefault(name, (node, definitions))
    names = draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True))
    body = {**base, **{name: draw(schema_values(*fields[name])) for name in names}}
    body[budget] = draw(st.integers(1, max_tokens))
    caps = {
        "max_completion_tokens": max_tokens,
        "n": 2,
        "logprobs": 5,
        "top_logprobs": 5,
        "prompt_logprobs": 5,
        "min_tokens": max_tokens,
    }
    for name, most in caps.items():
        if isinstance(body.get(name), int) and not isinstance(body[name], bool) and body[name] > most:
            body[name] = most
    return body


FUZZ_SEED = 0


def fuzzing(mode: str, seed: Any = None, **options: Any):
    """Hypothesis settings for a fuzz check under `--vllm-fuzz` MODE, as a decorator for `@given`.

    replay: a fixed seed plus the failing examples found before (the example database), so the
    same server gets the same verdict; seed: the fixed seed only; explore: new random examples,
    failures saved to the database for later replays.
    """
    from hypothesis import seed as fixed_seed
    from hypothesis import settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    from pytest_vllm.settings import cache_root

    database = None if mode == "seed" else DirectoryBasedExampleDatabase(str(cache_root() / "hypothesis"))

    def apply(test):
        # One failure a check (the first found, shrunk): which later ones a run also finds can vary.
        test = settings(database=database, report_multiple_bugs=False, **options)(test)
        return test if mode == "explore" else fixed_seed(FUZZ_SEED if seed is None else seed)(test)

    return apply
