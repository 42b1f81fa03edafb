"""What a check's end means: the server's fault (`failed`) or our own (`error`), why, and how.

A check fails only when the server's answer contradicts an expectation: an assertion of the
check itself (or of a helper in `pytest_vllm.checks`), an HTTP status the SDK refused, or a
connection the server broke or left unanswered. Any other exception, including an assertion
raised inside Hypothesis, the openai SDK or a strategy, is pytest-vllm's own error.

Each verdict carries a one-line `reason` and a `fingerprint`: a short summary of *what* is
wrong, free of run noise (ports, paths, ids, timestamps, object reprs), so that two runs can be
compared failure by failure. A check can set its fingerprint with `fingerprint(text)`. Where one
fault of the server shows in several ways from run to run (a stream cut off or left unfinished,
a reset or a hang, as timing decides), the check names the fault's class with `failure_class`,
and every symptom raised inside it gets that fingerprint; the reason keeps the symptom. A lost
connection and a timeout are one class (the server gave no complete answer) for every check.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from pytest_vllm.checks.answers import MissingField
from pytest_vllm.outcomes import Deviation, ProbeError, ServerFault, lost_contact_fingerprint

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

OWN_ERROR = "pytest-vllm's own error (a bug in the check or the plugin, not a verdict on the server)"
_CHECK_HELPERS = Path(__file__).resolve().parent / "checks"  # their assertions judge the server
_REASON_LIMIT = 300
_FINGERPRINT_LIMIT = 200

_NOISE = [
    (re.compile(r"\bhttps?://[^/\s'\"]+(?=/)"), ""),  # scheme, host and port: the path stays
    (re.compile(r"\bhttps?://[^/\s'\"]+"), "<server>"),
    (re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>"), r"<\1 object>"),
    (re.compile(r"""(system_fingerprint['"]?:\s*['"])[^'"]+"""), r"\1…"),  # vLLM's hash of its config and model
    (re.compile(r"\b0x[0-9a-fA-F]{6,}\b"), "0x…"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\b((?:chatcmpl|cmpl|embd|resp|req|msg|call|chatcmpl-tool)-)[A-Za-z0-9_-]{6,}"), r"\1…"),
    (re.compile(r"-?\d+\.\d{5,}(?:e-?\d+)?"), "<float>"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<hex>"),
    (re.compile(r"(?:[\w.~-]*/)*(?:site-packages|dist-packages|\.cache|tmp|pytest-of-\w+)/[^\s'\":,)]*"), "<path>"),
    (re.compile(r"\b(pid|process) \d+"), r"\1 <n>"),
    (re.compile(r"\b1[6-9]\d{8}(?:\.\d+)?\b"), "<time>"),
]
# A status followed by the body it came with: the fingerprint keeps the status only.
_BODY_AFTER_STATUS = re.compile(r"\b((?:got|answered|answers|returned) \d{3})(?::| with)\s.*$")

_explicit: dict[str, str] = {}
_classed: list[tuple[BaseException, str]] = []  # failures raised inside a failure_class, with its text


def fingerprint(text: str) -> None:
    """Say how the running check is failing, for comparison with other runs (e.g. `param=None`).

    Call it before the assertion it describes; it holds only if the check then fails.
    """
    _explicit["fingerprint"] = text


@contextlib.contextmanager
def failure_class(text: str) -> Iterator[None]:
    """Fingerprint any failure raised inside as `text`: the class of a fault whose symptom varies
    with timing (e.g. "simultaneous streams are not each complete"), however it showed this run."""
    try:
        yield
    except BaseException as error:
        _classed.append((error, text))
        raise


def reset() -> None:
    _explicit.clear()
    _classed.clear()


def denoise(text: str) -> str:
    """`text` without what changes from run to run: host and port, install paths, ids, times."""
    for pattern, replacement in _NOISE:
        text = pattern.sub(replacement, text)
    return text


@dataclass
class Verdict:
    outcome: str  # "failed" (the server) or "error" (ours)
    reason: str
    fingerprint: str


def judge(error: BaseException, tb: TracebackType | None, check_file: Path, server_check: bool = True) -> Verdict:
    """The verdict on a check that raised `error` in its body; for a test that is no check of a
    server (`server_check` False), only its reason and fingerprint: pytest's outcome stands."""
    outcome, reason, explicit = _classify(error, tb, check_file)
    if not server_check:
        outcome = "failed"
    reason = _one_line(denoise(reason))
    if outcome == "error":
        reason = f"{OWN_ERROR}: {reason}"
    if explicit is None:
        explicit = _explicit.get("fingerprint") if outcome == "failed" else None
    if outcome == "failed":
        explicit = next((text for raised, text in _classed if raised in _chain(error)), explicit)
    fp = denoise(explicit) if explicit is not None else _BODY_AFTER_STATUS.sub(r"\1", reason)
    return Verdict(outcome, reason, _short(fp))


def _classify(error: BaseException, tb: TracebackType | None, check_file: Path) -> tuple[str, str, str | None]:
    import httpx
    import openai

    if isinstance(error, BaseExceptionGroup):
        parts = [_classify(e, e.__traceback__, check_file) for e in error.exceptions]
        outcome = "failed" if all(p[0] == "failed" for p in parts) else "error"
        chosen = [p for p in parts if p[0] == outcome]
        return outcome, " / ".join(p[1] for p in chosen), " / ".join(p[2] or p[1] for p in chosen)
    fault = _server_fault(error)
    if fault is not None:
        return "failed", str(fault), fault.fingerprint
    if isinstance(error, ProbeError):
        return "failed", f"probing a capability the check needs: {error}", None
    if isinstance(error, openai.APIStatusError):
        request = error.response.request
        return (
            "failed",
            (f"the server answered {error.status_code} to {request.method} {request.url.path}: {error.message}"),
            None,
        )
    if isinstance(error, (openai.APITimeoutError, httpx.TimeoutException)):
        sent = _request_of(error)
        return "failed", f"no answer within the request timeout: {sent}", lost_contact_fingerprint(sent)
    if isinstance(error, (openai.APIConnectionError, httpx.TransportError)):
        sent = _request_of(error)
        reason = f"the connection to the server failed ({sent}): {_cause(error)}"
        return "failed", reason, lost_contact_fingerprint(sent)
    if isinstance(error, MissingField) or (isinstance(error, AssertionError) and _raised_in_check(tb, check_file)):
        return "failed", _assertion_message(error), error.fingerprint if isinstance(error, Deviation) else None
    if isinstance(error, pytest.fail.Exception) and _called_from_check(tb, check_file):
        return "failed", _assertion_message(error), None  # pytest.fail(), or pytest.raises' "DID NOT RAISE"
    where = _innermost(tb)
    return "error", f"{type(error).__name__}: {error} (raised at {where})", None


def lost_contact(error: BaseException) -> bool:
    """Whether `error` is an exchange the server broke or left unanswered (not an answer)."""
    import httpx
    import openai

    return _server_fault(error) is not None or isinstance(error, (openai.APIConnectionError, httpx.TransportError))


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions it was raised from or while handling."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _server_fault(error: BaseException) -> ServerFault | None:
    return next((raised for raised in _chain(error) if isinstance(raised, ServerFault)), None)


def _request_of(error: BaseException) -> str:
    request: Any = getattr(error, "request", None)  # anything: what it lacks is caught
    try:
        return f"{request.method} {request.url.path}"
    except (AttributeError, RuntimeError):
        return "a request"


def _cause(error: BaseException) -> str:
    cause = error.__cause__ or error
    return f"{type(cause).__name__}: {cause}"


def _assertion_message(error: BaseException) -> str:
    """The check's own message, without pytest's `assert ...` introspection below it."""
    text = str(error.msg if isinstance(error, pytest.fail.Exception) else error)
    own = text.split("\nassert ", 1)[0] if not text.startswith("assert ") else text
    return own.strip() or "assertion failed"


def _is_check_code(filename: str, check_file: Path) -> bool:
    path = Path(filename).resolve()
    return path == check_file.resolve() or path.parent == _CHECK_HELPERS


def _raised_in_check(tb: TracebackType | None, check_file: Path) -> bool:
    """An assertion is the check's when the check (or an assertion helper) raised it itself."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and _is_check_code(tb.tb_frame.f_code.co_filename, check_file)


def _called_from_check(tb: TracebackType | None, check_file: Path) -> bool:
    """pytest's own `fail` is the check's when the check called it (directly or via pytest.raises)."""
    while tb is not None:
        if _is_check_code(tb.tb_frame.f_code.co_filename, check_file):
            return True
        tb = tb.tb_next
    return False


def _innermost(tb: TracebackType | None) -> str:
    last = tb
    while last is not None and last.tb_next is not None:
        last = last.tb_next
    if last is None:
        return "unknown"
    return f"{Path(last.tb_frame.f_code.co_filename).name}:{last.tb_lineno}"


def _short(fingerprint: str) -> str:
    """At most `_FINGERPRINT_LIMIT` characters; a longer one keeps its head and a hash of the whole,
    so that a change anywhere in it still shows."""
    if len(fingerprint) <= _FINGERPRINT_LIMIT:
        return fingerprint
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:10]
    return f"{fingerprint[: _FINGERPRINT_LIMIT - 14]}… #{digest}"


def _one_line(text: str) -> str:
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= _REASON_LIMIT else line[: _REASON_LIMIT - 1] + "…"
