"""Wire-level helpers for the generation suites: SSE streams read strictly, chunks joined back.

`read_stream` reads a streamed `/v1/completions` or `/v1/chat/completions` answer the way
OpenAI's clients do, but asserts each framing rule they silently forgive: the
`text/event-stream` content type, `data: ` frames separated by a blank line, one
`data: [DONE]` sent once and last, a JSON object in every other frame, no mid-stream error.
`join_choices` folds the chunks of each choice into what the non-streamed answer holds, so
a check can compare the two. `stop_string_in` picks a stop string that a model's own output holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_vllm.checks.answers import answer
from pytest_vllm.outcomes import inconclusive

if TYPE_CHECKING:
    import httpx

DONE = "[DONE]"
_PREFIX = "data: "


def read_stream(response: httpx.Response) -> list[dict[str, Any]]:
    """Read a streaming response to its end; assert SSE framing; return the JSON chunks."""
    body = response.read().decode()
    assert response.status_code == 200, f"the stream answered {response.status_code}: {body[:500]}"
    content_type = response.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == "text/event-stream", (
        f"a streamed answer must be Server-Sent Events (Content-Type text/event-stream, as "
        f"OpenAI's API and vLLM's docs say), got {content_type!r}"
    )
    body = body.replace("\r\n", "\n")
    assert body.endswith("\n\n"), f"the last SSE event is not closed by a blank line: ...{body[-200:]!r}"
    frames = body[:-2].split("\n\n")
    bad = [frame for frame in frames if "\n" in frame or not frame.startswith(_PREFIX)]
    assert not bad, (
        "every SSE event of an OpenAI stream is one `data: <payload>` line followed by a blank "
        f"line; these are not: {[frame[:200] for frame in bad[:3]]}"
    )
    payloads = [frame[len(_PREFIX) :] for frame in frames]
    assert payloads.count(DONE) == 1 and payloads[-1] == DONE, (
        f"a stream ends with `data: {DONE}` sent exactly once, as its last event; got "
        f"{payloads.count(DONE)} of them, the last event being {payloads[-1][:200]!r}"
    )
    chunks = []
    for payload in payloads[:-1]:
        try:
            chunk = answer(json.loads(payload))
        except ValueError:
            raise AssertionError(f"an SSE event before [DONE] is not JSON: {payload[:300]!r}") from None
        assert isinstance(chunk, dict), f"an SSE event is JSON but not an object: {payload[:300]!r}"
        assert "error" not in chunk, f"the server reported an error mid-stream: {payload[:500]}"
        chunks.append(chunk)
    assert chunks, "the stream holds no chunk before [DONE]"
    return chunks


def read_events(response: httpx.Response) -> list[dict[str, Any]]:
    """Read a stream of named events (the Responses and Messages APIs: `event:` and `data:` lines)
    to its end; return the JSON of every `data:` line but `[DONE]`."""
    body = response.read().decode()
    assert response.status_code == 200, f"the stream answered {response.status_code}: {body[:400]}"
    events = []
    for line in body.splitlines():
        if line.startswith(_PREFIX) and line[len(_PREFIX) :] != DONE:
            try:
                events.append(answer(json.loads(line[len(_PREFIX) :])))
            except ValueError:
                raise AssertionError(f"an SSE event is not JSON: {line[:300]!r}") from None
    return events


def choice_chunks(chunks: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """The streamed choice objects of each choice index, in arrival order."""
    by_index: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            by_index.setdefault(choice["index"], []).append(choice)
    return by_index


def join_choices(chunks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each choice of a stream joined into its non-streamed form, by index.

    Completions: `{"text", "finish_reason", "logprobs"}` (logprobs lists concatenated).
    Chat: `{"message": {"role", "content"}, "finish_reason", "logprobs"}` (logprobs.content
    concatenated). `finish_reason` is the last non-null one; `logprobs` is None if no chunk had any.
    """
    joined = {}
    for index, parts in choice_chunks(chunks).items():
        reasons = [part["finish_reason"] for part in parts if part.get("finish_reason") is not None]
        logprobs = [part["logprobs"] for part in parts if part.get("logprobs") is not None]
        if "delta" in parts[0]:
            deltas = [part["delta"] for part in parts]
            choice: dict[str, Any] = {
                "message": {
                    "role": next((d["role"] for d in deltas if d.get("role")), None),
                    "content": "".join(d.get("content") or "" for d in deltas),
                },
                "logprobs": {"content": [t for lp in logprobs for t in lp.get("content") or []]} if logprobs else None,
            }
        else:
            keys = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
            choice = {
                "text": "".join(part["text"] for part in parts),
                "logprobs": {key: [v for lp in logprobs for v in lp[key]] for key in keys} if logprobs else None,
            }
        choice["finish_reason"] = reasons[-1] if reasons else None
        joined[index] = choice
    return joined


def stop_string_from(text: str, length: int = 3) -> str | None:
    """A substring of `text` to use as a stop string: the one first occurring latest (None: too short)."""
    candidates = [text[i : i + length] for i in range(len(text) - length + 1)]
    candidates = [c for c in candidates if "\ufffd" not in c]
    return max(candidates, key=text.find) if candidates else None


STOP_BUDGETS = (12, 48)


def stop_string_in(answer: Callable[[int], str]) -> tuple[str, int, str]:
    """(answer, max_tokens, stop string): `answer(max_tokens)`, the greedy text, at the first budget of
    `STOP_BUDGETS` long enough to pick a stop string from; inconclusive if none is."""
    for tokens in STOP_BUDGETS:
        full = answer(tokens)
        stop = stop_string_from(full)
        if stop is not None:
            return full, tokens, stop
    inconclusive(f"the greedy answer {full!r} ({tokens} tokens) is too short to pick a stop string from")
