"""One server per distinct configuration per test run, shared by pytest-xdist workers.

The recipe is pytest-xdist's own for session fixtures: a file lock in the directory all
workers share. The first process to need a `ServerSpec` launches it and records the
handle (or the error) in `<key>.json`; the others read it. The run's owner (the xdist
controller, or pytest itself without xdist) stops every recorded server at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

from filelock import FileLock

from pytest_vllm.launchers import Launcher, ServerSpec, VllmServer
from pytest_vllm.outcomes import VllmServerError


class ServerPool:
    """Launches and shares servers; `close()` on the owner stops them all."""

    def __init__(self, launcher: Launcher, shared_dir: Path, startup_timeout: float, owner: bool):
        self.launcher = launcher
        self.shared_dir = shared_dir
        self.startup_timeout = startup_timeout
        self.owner = owner
        self._servers: dict[str, VllmServer] = {}
        shared_dir.mkdir(parents=True, exist_ok=True)

    def get(self, spec: ServerSpec) -> VllmServer:
        """The ready server for `spec`, launched on first use by whichever process comes first."""
        if spec.key not in self._servers:
            record = self.shared_dir / f"{spec.key}.json"
            with FileLock(str(record) + ".lock"):
                if not record.exists():
                    record.write_text(self._launch(spec))
                data = json.loads(record.read_text())
            if "error" in data:
                raise VllmServerError(data["error"])
            self._servers[spec.key] = VllmServer.from_json(data["server"], spec.api_key)
        return self._servers[spec.key]

    def _launch(self, spec: ServerSpec) -> str:
        try:
            server = self.launcher.start(spec, self.shared_dir, self.startup_timeout)
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
        """On the owner: stop every server of the run, whichever process launched it."""
        if self.owner:
            for server in self.launched():
                self.launcher.stop(server)
            self.launcher.close(self.shared_dir)
