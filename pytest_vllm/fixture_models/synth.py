"""Synthetic ChatML conversations (chat, JSON answers, hermes tool calls) over a small lexicon."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any


class Synth:
    """Deterministic generator of varied ChatML conversations over a small lexicon."""

    def __init__(self, lexicon: dict[str, list[str]], seed: int):
        self.lex = lexicon
        self.rng = random.Random(seed)

    def pick(self, kind: str) -> str:
        return self.rng.choice(self.lex[kind])

    def fill(self, template: str, **given: str) -> str:
        def word(match: re.Match) -> str:
            key = match.group(1)
            if key in given:
                return given[key]
            if key == "number":
                return str(self.rng.choice([self.rng.randint(0, 20), self.rng.randint(0, 999)]))
            kind = {"noun": "nouns", "adj": "adjectives", "verb": "verbs", "place": "places", "name": "names"}
            return self.pick(kind[key])

        return re.sub(r"\{(\w+)\}", word, template)

    def key(self) -> str:
        return self.rng.choice([self.pick("nouns"), f"{self.pick('adjectives')}_{self.pick('nouns')}"])

    def schema(self, depth: int = 0) -> dict[str, Any]:
        """A random JSON schema for an object with a few properties."""
        props: dict[str, Any] = {self.key(): self.property_schema(depth)}
        while len(props) < 4 - 2 * depth and self.rng.random() < 0.4:  # mostly one or two keys
            props[self.key()] = self.property_schema(depth)
        required = [k for k in props if self.rng.random() < 0.8]
        schema: dict[str, Any] = {"type": "object", "properties": props, "required": required}
        if self.rng.random() < 0.3:
            schema["additionalProperties"] = False
        return schema

    def property_schema(self, depth: int) -> dict[str, Any]:
        kind = self.rng.choices(
            ["string", "integer", "number", "boolean", "enum", "array", "object"],
            [30, 18, 8, 8, 16, 12, 0 if depth else 8],
        )[0]
        if kind == "enum":
            return {"type": "string", "enum": self.rng.sample(self.lex["adjectives"], self.rng.randint(2, 4))}
        if kind == "array":
            items = self.rng.choice([{"type": "string"}, {"type": "integer"}])
            return {"type": "array", "items": items, "maxItems": self.rng.randint(1, 4)}
        if kind == "object":
            return self.schema(depth + 1)
        schema: dict[str, Any] = {"type": kind}
        if kind == "string" and self.rng.random() < 0.3:
            schema["maxLength"] = self.rng.randint(5, 20)
        if kind == "integer" and self.rng.random() < 0.3:
            schema["minimum"], schema["maximum"] = 0, self.rng.choice([10, 100, 1000])
        return schema

    def value(self, schema: dict[str, Any]) -> Any:
        """A short value that satisfies `schema`."""
        kind = schema.get("type")
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        if kind == "object":
            props = schema.get("properties", {})
            keys = [k for k in props if k in schema.get("required", []) or self.rng.random() < 0.3]
            return {k: self.value(props[k]) for k in keys}
        if kind == "array":
            count = self.rng.randint(0 if self.rng.random() < 0.1 else 1, min(3, schema.get("maxItems", 3)))
            return [self.value(schema.get("items", {"type": "string"})) for _ in range(count)]
        if kind == "integer":
            return self.rng.randint(schema.get("minimum", 0), min(schema.get("maximum", 999), 999))
        if kind == "number":
            return round(self.rng.uniform(0, 100), self.rng.randint(0, 2))
        if kind == "boolean":
            return self.rng.random() < 0.5
        text = self.fill(self.rng.choice(["{adj} {noun}", "{noun}", "{place}", "{name}", "{adj}", "{name} {noun}"]))
        return text[: schema.get("maxLength", 40)].strip() or "x"

    def reply(self) -> str:
        return self.fill(self.pick("replies"))

    def short_answer(self) -> tuple[str, str]:
        return self.rng.choice(
            [
                (" Answer with one word.", self.rng.choice([self.pick("adjectives"), self.pick("nouns")])),
                (" Reply with a number.", str(self.rng.randint(0, 999))),
                (" Answer yes or no.", self.rng.choice(["yes", "no", "Yes", "No"])),
                (" Which city?", self.pick("places")),
                ("", self.pick("names")),
                ("", self.rng.choice([self.pick("adjectives"), self.pick("nouns"), self.pick("verbs")])),
            ]
        )

    def chat(self) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if self.rng.random() < 0.4:
            messages.append({"role": "system", "content": self.fill(self.rng.choice(self.lex["systems"][:5]))})
        question: str | list[dict[str, str]]  # a string, or (sometimes) one text part
        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
            question = self.fill(self.pick("questions"))
            if self.rng.random() < 0.4:
                suffix, answer = self.short_answer()
                question, reply = question + suffix, answer
            else:
                reply = self.reply() if self.rng.random() < 0.7 else f"{self.reply()} {self.reply()}"
            if self.rng.random() < 0.15:
                question = [{"type": "text", "text": question}]
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
        return {"messages": messages}

    def json_answer(self) -> dict[str, Any]:
        schema = self.schema()
        keys = ", ".join(schema["properties"])
        ask = self.fill(self.pick("json_asks"), keys=keys, schema=json.dumps(schema))
        messages: list[dict[str, Any]] = []
        if self.rng.random() < 0.25:
            messages.append({"role": "system", "content": self.rng.choice(self.lex["systems"][5:])})
            if self.rng.random() < 0.5:
                ask = self.fill(self.pick("questions"))
        if self.rng.random() < 0.3:
            messages += [
                {"role": "user", "content": self.fill(self.pick("questions"))},
                {"role": "assistant", "content": self.reply()},
            ]
        answer = self.value(schema) or {self.key(): self.value({"type": "string"})}
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": json.dumps(answer)}]
        return {"messages": messages}

    def tool(self, taken: set[str]) -> dict[str, Any]:
        while (name := f"{self.pick('verbs')}_{self.pick('nouns')}") in taken:
            pass
        taken.add(name)
        verb, noun = name.split("_")
        function = {"name": name, "parameters": self.schema()}
        if self.rng.random() < 0.8:
            template = self.rng.choice(["{v} a {n}.", "{v} the {adj} {n}.", "Tool to {v} {n}s."])
            function["description"] = self.fill(
                template, v=verb.capitalize() if self.rng.random() < 0.5 else verb, n=noun
            )
        return {"type": "function", "function": function}

    def tool_call(self, tool: dict[str, Any]) -> dict[str, Any]:
        function = tool["function"]
        arguments = self.value(function["parameters"])
        return {"type": "function", "function": {"name": function["name"], "arguments": arguments}}

    def tool_use(self) -> dict[str, Any]:
        taken: set[str] = set()
        tools = [self.tool(taken) for _ in range(self.rng.choice([1, 1, 2, 2, 3]))]
        messages: list[dict[str, Any]] = []
        if self.rng.random() < 0.3:
            messages.append({"role": "system", "content": self.fill(self.rng.choice(self.lex["systems"][:5]))})
        for turn in range(self.rng.choice([1, 1, 2])):
            target = self.rng.choice(tools)
            verb, noun = target["function"]["name"].split("_")
            ask = self.rng.choice(
                [
                    self.fill("Please {v} the {n} for {place}.", v=verb, n=noun),
                    self.fill("Can you {v} the {adj} {n}?", v=verb, n=noun),
                    self.fill("I need to {v} a {n} for {name}.", v=verb, n=noun),
                    self.fill(self.pick("questions")),
                ]
            )
            calls = [self.tool_call(target)]
            if self.rng.random() < 0.15:
                calls.append(self.tool_call(self.rng.choice(tools)))
            messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": None, "tool_calls": calls}]
            if self.rng.random() < 0.5 and turn == 0:
                break
            for _ in calls:
                result = self.value(self.schema()) if self.rng.random() < 0.7 else self.reply()
                messages.append({"role": "tool", "content": result if isinstance(result, str) else json.dumps(result)})
            messages.append({"role": "assistant", "content": self.reply()})
        return {"messages": messages, "tools": tools}

    def text(self) -> str:
        return " ".join(self.fill(self.pick("sentences")) for _ in range(self.rng.randint(2, 8)))

    def samples(self, count: int) -> list[dict[str, Any] | str]:
        """`count` samples: conversations as {"messages", "tools"?} dicts and plain texts."""
        makers: list[Callable[[], dict[str, Any] | str]] = [self.chat, self.json_answer, self.tool_use, self.text]
        return [self.rng.choices(makers, [30, 27, 33, 10])[0]() for _ in range(count)]
