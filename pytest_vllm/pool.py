"""One server per distinct configuration per test run, shared by pytest-xdist workers.

The recipe is pytest-xdist's own for session fixtures: a file lock in the directory all
workers share. The first process to need a `ServerSpec` launches it and records the
handle (or the error) in `<key>.json`; the others read it. The run's owner (the xdist
controller, or pytest itself without xdist) stops every recorded server at the end.

A server that died or wedged is relaunched on the same port by the first process to find it so
(`relaunch`): every client's URL stays valid, and its record says how many times it was.

`start_early` launches, in a background thread, the servers the run's checks will ask for later, so that
a server starts while the checks on the one before run, not when its own first check comes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from filelock import FileLock

from pytest_vllm.launchers import Abandoned, Launcher, ServerSpec, VllmServer
from pytest_vllm.outcomes import VllmServerError

MAX_RELAUNCHES = 10  # per server and run: a server that keeps dying stops the run
# What a relaunch changes in a server's handle.
_RELAUNCH_CHANGES = (
    "base_url",
    "pid",
    "container",
    "log_path",
    "startup_seconds",
    "relaunches",
    "version",
    "dtype",
    "device",
    "kv_cache_tokens",
)
_ABANDON_SECONDS = 30  # how long an early start may take to stop its server once the run ends


class ServerPool:
    """Launches and shares servers; `close()` on the owner stops them all."""

    def __init__(self, launcher: Launcher, shared_dir: Path, startup_timeout: float, owner: bool):
        self.launcher = launcher
        self.shared_dir = shared_dir
        self.startup_timeout = startup_timeout
        self.owner = owner
        self._servers: dict[str, VllmServer] = {}
        self._specs: dict[str, ServerSpec] = {}
        self._getting: dict[str, threading.Lock] = {}  # per spec: this process's threads ask for it once
        self._early: list[threading.Thread] = []
        shared_dir.mkdir(parents=True, exist_ok=True)

    def get(self, spec: ServerSpec) -> VllmServer:
        """The ready server for `spec`, launched on first use by whichever process (or thread) comes first."""
        with self._getting.setdefault(spec.key, threading.Lock()):
            if spec.key not in self._servers:
                record = self.shared_dir / f"{spec.key}.json"
                with FileLock(str(record) + ".lock"):
                    if not record.exists():
                        _write(record, self._launch(spec))
                    data = json.loads(record.read_text())
                if "error" in data:
                    raise VllmServerError(data["error"])
                self._servers[spec.key] = VllmServer.from_json(data["server"], spec.api_key)
                self._specs[spec.key] = spec
            return self._servers[spec.key]

    def start_early(self, specs: list[Callable[[], ServerSpec]]) -> None:
        """Launch the servers of `specs` one after another in a background thread (in the order the checks need
        them: on 2 cores, starts side by side are no faster), so each is up, or starting, when its first check
        asks. A failure is left for that check, which asks again and gets it."""

        def launch() -> None:
            for spec_of in specs:
                if self.launcher.abandon.is_set():
                    return
                with contextlib.suppress(VllmServerError):  # recorded for, or raised again to, the check
                    self.get(spec_of())

        thread = threading.Thread(target=launch, name="pytest-vllm-start-early", daemon=True)
        thread.start()
        self._early.append(thread)

    def owns(self, server: VllmServer) -> bool:
        """Whether `server` (or a copy of it) came from the pool, so that it can be relaunched."""
        return self._key(server) is not None

    def _key(self, server: VllmServer) -> str | None:
        return next((key for key, known in self._servers.items() if known.base_url == server.base_url), None)

    def refresh_all(self) -> None:
        for server in self._servers.values():
            self.refresh(server)

    def refresh(self, server: VllmServer) -> bool:
        """Whether another process relaunched `server` since this one last saw it (it and the pool's own handle
        are then updated)."""
        key = self._key(server)
        assert key is not None, "a server of the pool"
        current = VllmServer.from_json(json.loads((self.shared_dir / f"{key}.json").read_text())["server"], None)
        if current.relaunches <= server.relaunches:
            return False
        _update(server, current)
        _update(self._servers[key], current)
        return True

    def relaunch(self, server: VllmServer) -> None:
        """Stop `server` (dead or wedged) and start its configuration again on the same port, updating `server`
        in place, unless another process did since this one last saw it. A relaunch that fails raises
        VllmServerError."""
        key = self._key(server)
        assert key is not None, "a server of the pool"
        record = self.shared_dir / f"{key}.json"
        with FileLock(str(record) + ".lock"):
            if self.refresh(server):
                return
            self.launcher.stop(server)
            if server.relaunches >= MAX_RELAUNCHES:
                raise VllmServerError(f"it died {server.relaunches + 1} times in this run: it is not launched again")
            fresh = self.launcher.start(
                self._specs[key], self.shared_dir, self.startup_timeout, urlsplit(server.base_url).port
            )
            fresh.relaunches = server.relaunches + 1
            _write(record, json.dumps({"server": fresh.to_json(), "keyed": bool(server.api_key)}))
            _update(server, fresh)
            _update(self._servers[key], fresh)

    def _launch(self, spec: ServerSpec) -> str:
        try:
            server = self.launcher.start(spec, self.shared_dir, self.startup_timeout)
        except Abandoned:
            raise  # no record: a process still running checks launches it again
        except VllmServerError as error:
            return json.dumps({"error": str(error)})
        return json.dumps({"server": server.to_json(), "keyed": bool(spec.api_key)})  # the key itself stays in memory

    def launched(self, key: str | None = None) -> list[VllmServer]:
        """Every server this run launched (read from the shared records); `key`: the one those launched
        with a key have."""
        servers = []
        for record in sorted(self.shared_dir.glob("*.json")):
            data = json.loads(record.read_text())
            if "server" in data:
                servers.append(VllmServer.from_json(data["server"], key if data.get("keyed") else None))
        return servers

    def close(self) -> None:
        """Abandon this process's early starts still under way; on the owner, stop every server of the run,
        whichever process launched it."""
        self.launcher.abandon.set()
        for thread in self._early:
            thread.join(timeout=_ABANDON_SECONDS)
        if self.owner:
            for server in self.launched():
                self.launcher.stop(server)
            self.launcher.close(self.shared_dir)


def _write(record: Path, text: str) -> None:
    """Replace `record` at once: a reader never sees half of it."""
    partial = record.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, record)


def _update(server: VllmServer, fresh: VllmServer) -> None:
    """Make `server` (the object every fixture and client of this process holds) the relaunched one."""
    for name in _RELAUNCH_CHANGES:
        setattr(server, name, getattr(fresh, name))


@contextmanager
def turn(shared_dir: Path, alone: bool = False) -> Iterator[None]:
    """A turn to run a check: beside the other processes' checks, or `alone` (once the checks under way end, none
    starts until this one has). A waiting `alone` turn goes first: it holds the turnstile the others pass."""
    shared_dir.mkdir(parents=True, exist_ok=True)
    with open(shared_dir / "turnstile.lock", "a") as turnstile, open(shared_dir / "checks.lock", "a") as checks:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(checks, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield  # closing the files releases the locks
