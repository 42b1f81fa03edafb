"""Reading a vLLM server's log: its last lines, and the exception that killed its engine."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

_TAG = re.compile(r"\((?P<process>[\w-]+) pid=\d+\) ?")  # vLLM's "(EngineCore pid=12) "
_LEVEL = re.compile(r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d [\d:.]+ \[[^\]]*\] ")
_FRAME = re.compile(r'File "(?:.*/site-packages/)?(?P<file>[^"]+)", line (?P<line>\d+)')


def root_cause(log_text: str) -> str | None:
    """The exception that ended the first traceback of vLLM's engine in `log_text` (else of any
    process), as "Type: message", or None when the log holds no traceback."""
    first = None
    for process, cause in _tracebacks(log_text):
        if process.startswith("EngineCore"):
            return cause
        first = first or cause
    return first


def _tracebacks(log_text: str) -> Iterator[tuple[str, str]]:
    """(process, exception line) of every traceback in a vLLM log, in order."""
    lines = []
    for raw in log_text.split("\n"):
        tag = _TAG.match(raw)
        text = raw[tag.end() :] if tag else raw
        level = _LEVEL.match(text)
        lines.append((tag["process"] if tag else "", text[level.end() :] if level else text))
    for start, (process, text) in enumerate(lines):
        if text.strip() != "Traceback (most recent call last):":
            continue
        body = (text for p, text in itertools.islice(lines, start + 1, None) if p == process)
        frame = code = None
        for text in body:
            if not text.startswith(" "):
                break
            if match := _FRAME.search(text):
                frame, code = match, None
            elif code is None and set(text.strip()) - set("^~"):
                code = text.strip()
        else:
            continue
        if text.rstrip().endswith(":"):  # the message goes on below
            text = f"{text.rstrip()} {next(body, '').strip()}"
        elif ":" not in text and frame:  # a bare exception: say where it was raised
            text += f" at {frame['file']}:{frame['line']}" + (f": {code}" if code else "")
        yield process, text.strip()


def tail(path: Path, lines: int) -> str:
    """The last `lines` lines of the log at `path` (read from its last 64 KiB)."""
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        file.seek(max(0, file.tell() - 64 * 1024))
        return b"\n".join(file.read().splitlines()[-lines:]).decode(errors="replace")
