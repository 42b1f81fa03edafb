"""What the run is waiting for, shown while models build and servers start.

Any process (an xdist worker too) appends JSON lines to `<shared_dir>/progress.log` with
`report` or `step`; the run's owner runs one `Ticker`, which prints the new lines and, every
few seconds, each step still under way with its time so far.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_NAME = "progress.log"
INTERVAL = 5.0


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


def console(fallback: Callable[[str], object]) -> Callable[[str], object]:
    """A line writer to this process's stdout as it is now, through a copy of its file descriptor:
    pytest's capture of a running test's output (which redirects fd 1 itself) does not swallow it.
    Make it at configure time, when nothing is captured; `fallback` where stdout has no descriptor."""
    try:
        stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, errors="replace")
    except (AttributeError, OSError, ValueError):  # e.g. an in-process pytester run's stdout
        return fallback
    return lambda line: stream.write(line + "\n")


class Ticker:
    """Prints the progress log through `write`: new lines, and every `interval` s the open steps."""

    def __init__(
        self,
        shared_dir: str | Path,
        write: Callable[[str], object],
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(shared_dir) / LOG_NAME
        self.write = write
        self.interval = interval
        self.clock = clock
        self._offset = 0
        self._open: dict[str, tuple[str, float]] = {}  # token -> (what, started)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        """Print the lines appended since the last tick, then "still <step> (N s)" for older open steps."""
        fresh = set()
        for entry in self._read_new():
            self.write(f"vllm: {entry['message']}")
            if "start" in entry:
                self._open[entry["start"]] = (entry["message"], entry["time"])
                fresh.add(entry["start"])
            if "end" in entry:
                self._open.pop(entry["end"], None)
        for token, (what, started) in self._open.items():
            if token not in fresh:
                self.write(f"vllm: still {what} ({self.clock() - started:.0f} s)")

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
