"""What the run is waiting for, shown while models build and servers start.

Any process (an xdist worker too) appends JSON lines to `<shared_dir>/progress.log` with
`report` or `step`; the run's owner runs one `Ticker`, which prints each new line and what is still
under way: on a TTY as one status line rewritten in place, elsewhere at most every 30 s.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import pytest

LOG_NAME = "progress.log"
INTERVAL = 5.0  # seconds between two looks at the log
QUIET = 30.0  # without a TTY, the fewest seconds between two "still" lines


def report(shared_dir: str | Path | None, message: str, **fields: str) -> None:
    """Append `message` to the run's progress log (nothing without a shared folder)."""
    if shared_dir is None:
        return
    Path(shared_dir).mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": time.time(), "message": message, **fields}) + "\n"
    with open(Path(shared_dir) / LOG_NAME, "a") as log:
        log.write(line)


@contextmanager
def step(shared_dir: str | Path | None, what: str, done: str = "done") -> Iterator[None]:
    """Report `what` as under way until the block ends, then "`what`: `done` in N s" (or failed)."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    report(shared_dir, what, start=token)
    started = time.monotonic()
    try:
        yield
    except BaseException:
        report(shared_dir, f"{what}: failed after {time.monotonic() - started:.0f} s", end=token)
        raise
    report(shared_dir, f"{what}: {done} in {time.monotonic() - started:.0f} s", end=token)


class Console:
    """The terminal as the ticker writes to it, beside pytest's own writer.

    It writes through a copy of stdout's file descriptor, which pytest's capture of a running test (fd 1
    redirected) does not swallow. A line of its own starts on a fresh line where pytest's line of
    progress is unfinished (`column`: that line's width); on a TTY the status is one line rewritten in
    place, erased before pytest writes a check's progress and not redrawn meanwhile (the hooks below).
    """

    def __init__(self, stream: TextIO, column: Callable[[], int]) -> None:
        self.stream = stream
        self.column = column
        self.tty = stream.isatty()
        self._lock = threading.RLock()
        self._status = ""  # the status on screen
        self._under = 0  # the width of pytest's line when a line of ours last started under it

    @classmethod
    def of_stdout(cls, column: Callable[[], int]) -> Console | None:
        """The console on stdout as it is now: make it at configure time, when nothing is captured.
        None where stdout has no descriptor (e.g. an in-process pytester run's)."""
        try:
            return cls(os.fdopen(os.dup(sys.stdout.fileno()), "w", errors="replace"), column)
        except (AttributeError, OSError, ValueError):
            return None

    def line(self, text: str) -> None:
        with self._lock:
            self._fresh()
            self._write(text + "\n")

    def status(self, text: str) -> None:
        """Show `text` in place of the status shown before ("" erases it), cut to one line of the terminal."""
        with self._lock:
            if text:
                self._fresh()
                text = text[: shutil.get_terminal_size().columns - 1]  # a wrapped line would not be erased
            else:
                self._erase()
            self._write(text)
            self._status = text

    def _fresh(self) -> None:
        """Be at the start of a line of ours: where the status was, or under pytest's unfinished line."""
        self._erase()
        column = self.column()
        if column and column != self._under:
            self._write("\n")
        self._under = column

    def _erase(self) -> None:
        if self._status:
            self._write("\r" + " " * len(self._status) + "\r")
            self._status = ""

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _pytest_writes(self) -> Generator[None, object, object]:
        with self._lock:
            self._erase()
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logstart(self) -> Generator[None, object, object]:
        return (yield from self._pytest_writes())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self) -> Generator[None, object, object]:
        return (yield from self._pytest_writes())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logfinish(self) -> Generator[None, object, object]:
        return (yield from self._pytest_writes())


class Ticker:
    """Prints the progress log: each new line through `write`; what is still under way through `status`
    at every tick where given (a status line), else through `write` at most every `quiet` s."""

    def __init__(
        self,
        shared_dir: str | Path,
        write: Callable[[str], object],
        status: Callable[[str], object] | None = None,
        interval: float = INTERVAL,
        quiet: float = QUIET,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(shared_dir) / LOG_NAME
        self.write = write
        self.status = status
        self.interval = interval
        self.quiet = quiet
        self.clock = clock
        self._offset = 0
        self._open: dict[str, tuple[str, float]] = {}  # token -> (what, started)
        self._said = float("-inf")  # when the last line was written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        """Print the lines appended since the last tick, then "still <step> (N s), ..." for older open steps."""
        fresh = set()
        for entry in self._read_new():
            self._say(f"vllm: {entry['message']}")
            if "start" in entry:
                self._open[entry["start"]] = (entry["message"], entry["time"])
                fresh.add(entry["start"])
            if "end" in entry:
                self._open.pop(entry["end"], None)
        now = self.clock()
        still = [
            f"{what} ({now - started:.0f} s)" for token, (what, started) in self._open.items() if token not in fresh
        ]
        line = "vllm: still " + ", ".join(still) if still else ""
        if self.status is not None:
            self.status(line)
        elif line and now - self._said >= self.quiet:
            self._say(line)

    def _say(self, line: str) -> None:
        self.write(line)
        self._said = self.clock()

    def _read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line being written waits for the next tick
        self._offset += len(complete)
        entries = []
        for line in complete.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:  # a line cut short by a killed process
                continue
        return entries

    def start(self) -> Ticker:
        self._thread = threading.Thread(target=self._run, name="pytest-vllm-progress", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def stop(self) -> None:
        """Stop ticking, after printing what is still unprinted."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._open.clear()
        self.tick()
