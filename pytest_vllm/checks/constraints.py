"""Constraints for the structured-output and tool-calling suites, each one checked by the suite itself.

`CONSTRAINTS` holds one bounded constraint per kind vLLM enforces: `response_format`
`json_object` and `json_schema` (with and without `strict`), and `structured_outputs` `json`,
`regex`, `choice` and `grammar` (the same small language written in GBNF and in Lark). Each
names the request fields that impose it, a plain-words description for the prompt, and
`violation(text)`: the suite's own verdict (jsonschema, `re.fullmatch`, membership, a Python
reading of the grammar's language). Schemas are bounded (enums, `maxLength`, `maxItems`,
`additionalProperties: false`) so any model can finish within a few dozen tokens.
`REMOVED_FIELDS` maps each removed `guided_*` field to its `structured_outputs` successor.

For tool calling: `call_violations` checks returned calls against the request's tools, and
`tool_call_deltas` groups a stream's tool-call deltas by call index.

A constrained output cut by the token budget cannot be judged: `finished` asks once more with a
larger budget and the whitespace the output wasted forbidden (a JSON grammar leaves whitespace
free, and a model may spend any budget on it), and ends the check inconclusive if that is cut too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from jsonschema import Draft202012Validator

from pytest_vllm.outcomes import inconclusive

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "name": {"type": "string", "maxLength": 12},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]}, "maxItems": 2},
    },
    "required": ["answer", "count", "name", "tags"],
    "additionalProperties": False,
}
REGEX = r"(red|green|blue)-[0-9]{1,3}"
CHOICES = ["alpha", "beta", "gamma"]
# One language, "yes" or "no" then one to three digits, in both grammar syntaxes vLLM accepts.
GBNF = 'root ::= answer digit digit? digit?\nanswer ::= "yes" | "no"\ndigit ::= [0-9]'
LARK = 'start: ANSWER DIGIT DIGIT? DIGIT?\nANSWER: "yes" | "no"\nDIGIT: /[0-9]/'


def schema_violation(schema: dict[str, Any]) -> Callable[[str], str | None]:
    """`violation(text)` for a JSON schema: why `text` is not a JSON document valid against it."""
    validator = Draft202012Validator(schema)

    def violation(text: str) -> str | None:
        try:
            value = json.loads(text)
        except ValueError as error:
            return f"is not JSON ({error})"
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        where = [f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:3]]
        return f"violates the schema: {'; '.join(where)}" if where else None

    return violation


def regex_violation(pattern: str) -> Callable[[str], str | None]:
    return lambda text: None if re.fullmatch(pattern, text) else f"does not fully match the regex {pattern!r}"


def choice_violation(choices: list[str]) -> Callable[[str], str | None]:
    return lambda text: None if text in choices else f"is not one of the choices {choices}"


def yes_no_digits_violation(text: str) -> str | None:
    """The grammars' language read in Python: "yes" or "no", then one to three ASCII digits."""
    word = next((word for word in ("yes", "no") if text.startswith(word)), "")
    digits = text[len(word) :]
    if word and 1 <= len(digits) <= 3 and all(c in "0123456789" for c in digits):
        return None
    return "is not 'yes' or 'no' followed by 1 to 3 digits (the grammar's language)"


@dataclass(frozen=True)
class Constraint:
    """A constraint: the request `fields` imposing it, a description for the prompt, a checker."""

    fields: dict[str, Any]
    describe: str
    violation: Callable[[str], str | None]
    endpoints: tuple[str, ...] = ("chat", "completions")
    bounded: bool = False  # its outputs are a few tokens, no free whitespace: a model must finish within TOKENS


def _json_schema_format(strict: bool | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "answer", "schema": SCHEMA}
    if strict is not None:
        spec["strict"] = strict
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


_SCHEMA_WORDS = f"a JSON object matching this JSON schema: {json.dumps(SCHEMA)}"
_GRAMMAR_WORDS = "yes or no followed by a number, like yes42"
_CHAT = ("chat",)
CONSTRAINTS: dict[str, Constraint] = {
    "response_format-json_object": Constraint(
        {"response_format": {"type": "json_object"}}, "a JSON object", schema_violation({"type": "object"}), _CHAT
    ),
    "response_format-json_schema": Constraint(
        _json_schema_format(None), _SCHEMA_WORDS, schema_violation(SCHEMA), _CHAT
    ),
    "response_format-json_schema-strict": Constraint(
        _json_schema_format(True), _SCHEMA_WORDS, schema_violation(SCHEMA), _CHAT
    ),
    "structured_outputs-json": Constraint(
        {"structured_outputs": {"json": SCHEMA}}, _SCHEMA_WORDS, schema_violation(SCHEMA)
    ),
    "structured_outputs-regex": Constraint(
        {"structured_outputs": {"regex": REGEX}},
        "a colour (red, green or blue), a dash and a number, like red-42",
        regex_violation(REGEX),
        bounded=True,
    ),
    "structured_outputs-choice": Constraint(
        {"structured_outputs": {"choice": CHOICES}},
        "one of the words alpha, beta or gamma",
        choice_violation(CHOICES),
        bounded=True,
    ),
    "structured_outputs-grammar-gbnf": Constraint(
        {"structured_outputs": {"grammar": GBNF}}, _GRAMMAR_WORDS, yes_no_digits_violation, bounded=True
    ),
    "structured_outputs-grammar-lark": Constraint(
        {"structured_outputs": {"grammar": LARK}}, _GRAMMAR_WORDS, yes_no_digits_violation, bounded=True
    ),
}

# The fields vLLM 0.12 removed, each with the `structured_outputs` key that replaced it and a
# constraint whose language has no '#', '@', '~' or '%' (see the fail-open probe).
YES_NO = ["yes", "no"]
REMOVED_FIELDS: dict[str, tuple[str, Any, Callable[[str], str | None]]] = {
    "guided_choice": ("choice", YES_NO, choice_violation(YES_NO)),
    "guided_regex": ("regex", "(yes|no)[0-9]{0,2}", regex_violation("(yes|no)[0-9]{0,2}")),
    "guided_json": ("json", {"type": "string", "enum": YES_NO}, schema_violation({"type": "string", "enum": YES_NO})),
    "guided_grammar": ("grammar", GBNF, yes_no_digits_violation),
}
FOREIGN_CHARACTERS = ("#", "@", "~", "%")


def call_violations(calls: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[str]:
    """Why each returned tool call is malformed: OpenAI's ChatCompletionMessageToolCall shape,
    a name among `tools`, `arguments` a JSON object valid against that tool's (strict) schema,
    ids unique within the message."""
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in tools}
    problems = []
    ids = [call.get("id") for call in calls]
    if len(set(ids)) != len(ids):
        problems.append(f"tool call ids are not unique: {ids}")
    for call in calls:
        function = call.get("function") or {}
        name, arguments = function.get("name"), function.get("arguments")
        where = f"call {call.get('id')!r} ({name!r})"
        if not (isinstance(call.get("id"), str) and call["id"]) or call.get("type") != "function":
            problems.append(f"{where}: needs a non-empty string id and type 'function': {call}")
        if name not in schemas:
            problems.append(f"{where}: names no tool of the request ({sorted(schemas)})")
        elif not isinstance(arguments, str):
            problems.append(f"{where}: arguments must be a JSON string, got {arguments!r}")
        else:
            why = schema_violation(schemas[name])(arguments)
            if why:
                problems.append(f"{where}: arguments {arguments!r} {why} (the tool's strict parameter schema)")
    return problems


def tool_call_deltas(chunks: list[dict[str, Any]], choice: int = 0) -> dict[int, list[dict[str, Any]]]:
    """The streamed `delta.tool_calls` entries of one choice, grouped by their `index`, in order."""
    by_index: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        for part in chunk["choices"]:
            if part["index"] == choice:
                for delta in part["delta"].get("tool_calls") or []:
                    by_index.setdefault(delta.get("index"), []).append(delta)
    return by_index


Answer = TypeVar("Answer")
RETRY_BUDGET = 4  # the second try's budget, in multiples of the first's


def finished(
    send: Callable[[dict[str, Any]], Answer],
    cut_text: Callable[[Answer], str | None],
    budget: tuple[str, int],
    whitespace_bias: Callable[[str], dict[str, int]],
) -> tuple[Answer, dict[str, Any]]:
    """(answer, the fields added to get it): `send({})`'s answer where generation finished; where
    `cut_text(answer)` says the budget `(field, max tokens)` cut it (the text so far; None: it
    finished), `send` once more with `RETRY_BUDGET` times the budget and `whitespace_bias(text so
    far)`; inconclusive if that is cut too."""
    answer = send({})
    text = cut_text(answer)
    if text is None:
        return answer, {}
    field, tokens = budget
    extra = {field: tokens * RETRY_BUDGET, "logit_bias": whitespace_bias(text)}
    answer = send(extra)
    retried = cut_text(answer)
    if retried is None:
        return answer, extra
    inconclusive(
        f"cut by {field}={tokens} and again by {tokens * RETRY_BUDGET} with logit_bias -100 on whitespace, so "
        f"whether it meets the constraint cannot be judged; output so far: {retried[:200]!r}"
    )
