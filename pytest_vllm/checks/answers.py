"""The server's answers as the checks read them.

`Answer` is the JSON of an answer whose missing field fails the check as the server's deviation
(never a KeyError, which would be pytest-vllm's own error). `length_problem` says how an answer
breaks the length rules, which hold for any model with or without vLLM's `ignore_eos`.
`NEAR_TIE` bounds what batching may flip in a greedy answer (vLLM is not batch-invariant by default),
measured by a token's `lead` over the runner-up;
`agreeing` asks again for two answers that must be equal and parted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pytest_vllm.outcomes import Deviation

NEAR_TIE = 0.5  # nats: far above batch rounding (fp32 or bf16), far below a confident choice
TRIES = 5


def lead(logprobs: Iterable[float]) -> float:
    """How far the likeliest of `logprobs` leads the runner-up (infinite where there is no runner-up)."""
    top = [*sorted(logprobs, reverse=True), float("-inf"), float("-inf")]
    return top[0] - top[1]


A = TypeVar("A")


def pause(attempt: int) -> None:
    """Wait before try `attempt` (0-based) of `TRIES`: 0, 1, 2, 4, 8 s, for the requests batched with the
    last try to pass."""
    if attempt:
        time.sleep(2 ** (attempt - 1))


def agreeing(pair: Callable[[], tuple[A, A]], same: Callable[[A, A], bool] = lambda a, b: a == b) -> tuple[A, A]:
    """The first of `TRIES` pairs of answers `pair()` that are the `same`, else the last pair. Two answers
    that must be equal (one seed, greedy decoding, a stream and its answer) may part when other requests
    batched with them round or sample differently (vLLM is not batch-invariant by default): asked again,
    after a pause, they agree; a server that ignores the field they share parts every time."""
    for attempt in range(TRIES):
        pause(attempt)
        first, second = pair()
        if same(first, second):
            break
    return first, second


class MissingField(Deviation):
    """The server's answer lacks a field the check reads: the server's deviation."""


class Answer(dict):
    """A JSON object from the server: indexing a field it lacks raises MissingField."""

    def __missing__(self, key: Any) -> Any:
        raise MissingField(  # its fingerprint, whatever the check said before
            f"the server's answer has no {key!r} field: {json.dumps(self)[:300]}",
            f"the server's answer has no {key!r} field",
        )


def answer(value: Any) -> Any:
    """`value` (decoded JSON) with every object in it an Answer."""
    if isinstance(value, dict):
        return Answer({key: answer(item) for key, item in value.items()})
    if isinstance(value, list):
        return [answer(item) for item in value]
    return value


def install(response: Any) -> None:
    """An httpx response hook: `response.json()` gives Answers."""
    decode = response.json
    response.json = lambda **kwargs: answer(decode(**kwargs))


def length_problem(finish_reason: str | None, completion_tokens: int, max_tokens: int, ignore_eos: bool) -> str | None:
    """What is wrong with an answer's length, or None. With `ignore_eos` the model runs to
    max_tokens; without it, it may stop earlier, but never says "length" short of max_tokens."""
    if completion_tokens > max_tokens:
        return f"{completion_tokens} completion tokens for max_tokens={max_tokens}"
    if ignore_eos and (finish_reason, completion_tokens) != ("length", max_tokens):
        return (
            f"with ignore_eos the model runs to max_tokens={max_tokens} (finish_reason 'length'); "
            f"got {completion_tokens} tokens, finish_reason {finish_reason!r}"
        )
    if finish_reason == "length" and completion_tokens != max_tokens:
        return f"finish_reason 'length' after {completion_tokens} completion tokens, short of max_tokens={max_tokens}"
    if finish_reason not in ("length", "stop"):
        return f"finish_reason {finish_reason!r} for a plain generation (expected 'length' or 'stop')"
    return None
