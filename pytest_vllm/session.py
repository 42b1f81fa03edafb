"""The run's vLLM state: which servers to test, their capabilities, whether the run was stopped.

Its clients come from clients.py (`vllm.openai(server)`, `vllm.http(server)`, ...). A run of several targets
has a view of it per target (`target(name)`): that target's settings and servers, the rest shared.

Created by the plugin at configure time and touching nothing until a fixture asks:
the server pool, the fixture models and the HTTP clients all come on first use.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vllm.clients import Clients
from pytest_vllm.exchanges import Recorder
from pytest_vllm.outcomes import Unsupported, VllmServerError
from pytest_vllm.settings import Settings

if TYPE_CHECKING:
    import httpx

    from pytest_vllm.launchers import ServerSpec, VllmServer
    from pytest_vllm.pool import ServerPool

# The embedded default: which fixture model serves the checks of each capability (the chat
# model, --vllm-fixture-model, serves the others).
EMBEDDED_BY_CAPABILITY = {"vision": "tiny-vision", "embeddings": "minilm-embed", "classify": "minilm-rerank"}
EMBEDDED_ENV = (
    ("HF_HUB_OFFLINE", "1"),
    ("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True"),
    ("VLLM_ENABLE_RESPONSES_API_STORE", "1"),
    ("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")),
)


WEDGED_AFTER = 30.0  # seconds a one-token generation may take before a server that lost a request is wedged
# A one-token generation by the capability that serves it: its route and input.
_ONE_TOKEN: dict[str, tuple[str, dict[str, object]]] = {
    "completions": ("/v1/completions", {"prompt": "Hello"}),
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello"}]}),
}


def new_shared_dir() -> str:
    """A fresh per-run folder path (created on first use) that xdist workers share."""
    run = f"{os.getpid()}-{time.time_ns()}"
    return str(Path(tempfile.gettempdir()) / "pytest-vllm" / run)


class VllmSession:
    """Servers, their clients and capabilities for one test run (one per process under xdist)."""

    def __init__(self, settings: Settings, shared_dir: str, owner: bool) -> None:
        self.settings = settings
        self.shared_dir = Path(shared_dir)
        self.owner = owner
        self.recorder = Recorder()
        self.overrides = dict(settings.capability)
        self._pool: ServerPool | None = None
        self._remote: VllmServer | VllmServerError | None = None
        self._run = self  # the whole run: a target's view shares its pool and state
        self._views: dict[str, VllmSession] = {}
        self.main_unavailable = False
        self.clients = Clients(self.recorder, settings.request_timeout)
        # The factories as checks call them: vllm.openai(server), vllm.http(server, api_key=None), ...
        self.openai, self.async_openai, self.http = self.clients.openai, self.clients.async_openai, self.clients.http
        self.server_of = self.clients.server_of
        self._probe_clients: dict[tuple[str, str | None], httpx.Client] = {}

    @property
    def several(self) -> bool:
        """Whether the run tests several targets (each check once per target)."""
        return len(self.settings.targets) > 1

    def target(self, name: str) -> VllmSession:
        """The run as its target `name` sees it: that target's settings and servers; the recorder, clients,
        pool, capability overrides and stop marker are the run's."""
        if name not in self._views:
            [target] = [t for t in self.settings.targets if t.name == name]
            view = copy.copy(self)
            view.settings, view._remote, view._views = self.settings.of(target), None, {}
            self._views[name] = view
        return self._views[name]

    def views(self) -> list[VllmSession]:
        """One session per target: the views of a run of several, else this one."""
        return [self.target(t.name) for t in self.settings.targets] if self.several else [self]

    @property
    def embedded(self) -> bool:
        """True when no URL and no model were given: the tiny fixture models are launched."""
        return self.settings.url is None and self.settings.model is None

    @property
    def pool(self) -> ServerPool:
        run = self._run
        if run._pool is None:
            from pytest_vllm.launchers import launcher_for
            from pytest_vllm.pool import ServerPool

            launcher = launcher_for(run.settings)
            run._pool = ServerPool(launcher, run.shared_dir, run.settings.startup_timeout, run.owner)
        return run._pool

    # Servers

    @property
    def launching(self) -> bool:
        """Whether the run launches servers (the embedded default, --vllm-model, or a target that launches)."""
        return any(view.settings.url is None for view in self.views())

    def refresh_servers(self) -> None:
        """Update this process's launched servers where another process relaunched them."""
        if self._run._pool is not None:
            self._run._pool.refresh_all()

    def relaunches(self, server: VllmServer) -> bool:
        """Whether the run launched `server`, so that it can launch it again where it dies."""
        return self._run._pool is not None and self._run._pool.owns(server)

    def main_server(self) -> VllmServer:
        """The server under test: the one at --vllm-url, or the launched one.

        If it cannot be had, `main_unavailable` is set, and the plugin stops the run.
        """
        s = self.settings
        try:
            if s.url is None:
                return self.pool.get(self._spec(s.fixture_model))
            if self._remote is None:
                from pytest_vllm.launchers import connect

                try:
                    self._remote = connect(s.url, s.api_key, s.model, s.request_timeout)
                except VllmServerError as error:
                    self._remote = error  # asked once: an unreachable host is not waited for again
            if isinstance(self._remote, VllmServerError):
                raise self._remote
            return self._remote
        except VllmServerError:
            self._run.main_unavailable = True
            raise

    def server_with(self, capability: str) -> VllmServer:
        """The server for checks that need `capability`; Unsupported if it lacks it.

        The embedded default runs a dedicated fixture model for vision and embeddings and a
        keyed copy of the main server for auth; otherwise it is the server under test (a second
        copy of a user's model could not share its GPU).
        """
        own = self._own_server(capability)
        server = self.pool.get(self._launched_spec(capability)) if own else self.main_server()
        self.require(server, capability)
        return server

    def _own_server(self, capability: str | None) -> bool:
        """Whether the embedded default launches a server of its own for checks of `capability`."""
        keyed = capability == "auth" and not self.settings.api_key
        return self.embedded and (capability in EMBEDDED_BY_CAPABILITY or keyed)

    def _launched_spec(self, capability: str | None) -> ServerSpec:
        """What the run launches for checks of `capability` (None: the server under test)."""
        if not self._own_server(capability):
            return self._spec(self.settings.fixture_model)
        if capability == "auth":
            return dataclasses.replace(self._spec(self.settings.fixture_model), api_key=self._run_key())
        return self._spec(EMBEDDED_BY_CAPABILITY[str(capability)])

    def start_early(self, capabilities: list[str | None]) -> None:
        """Start, one after another in the background, every server the run launches for checks of
        `capabilities` (in the order their first checks come; None: the server under test)."""
        for view in self.views():
            if view.settings.url is None:
                needed = dict.fromkeys(c if view._own_server(c) else None for c in capabilities)
                view.pool.start_early([functools.partial(view._launched_spec, c) for c in needed])

    def launch(self, *, serve_args: tuple[str, ...] = (), api_key: str | None = None) -> VllmServer:
        """A differently configured copy of the launched server, one per configuration."""
        if self.settings.url is not None:
            raise Unsupported("unsupported: launching a server (testing the server at --vllm-url)")
        spec = self._spec(self.settings.fixture_model)
        spec = dataclasses.replace(
            spec, serve_args=spec.serve_args + tuple(serve_args), api_key=api_key or spec.api_key
        )
        return self.pool.get(spec)

    def _spec(self, fixture_model: str) -> ServerSpec:
        from pytest_vllm.launchers import ServerSpec

        s = self.settings
        if s.model is not None:
            return ServerSpec(s.model, serve_args=s.serve_arg, api_key=s.api_key)
        from pytest_vllm import fixture_models, platforms

        path = fixture_models.build(fixture_model, progress_dir=self.shared_dir)
        ours = fixture_models.serve_args(fixture_model, path, platforms.of(s))
        return ServerSpec(str(path), fixture_model, platforms.merged(ours, s.serve_arg), EMBEDDED_ENV, s.api_key)

    def _run_key(self) -> str:
        return "pytest-vllm-" + hashlib.sha256(str(self.shared_dir).encode()).hexdigest()[:24]

    # Capabilities

    def has(self, server: VllmServer, capability: str) -> bool:
        from pytest_vllm.capabilities import has

        return has(server, self._probe_client(server), capability, self.overrides)

    def require(self, server: VllmServer, capability: str) -> None:
        from pytest_vllm.capabilities import require

        require(server, self._probe_client(server), capability, self.overrides)

    def liveness(self, server: VllmServer) -> tuple[str, int]:
        """(route, status) of one cheap request showing `server` still serves: vLLM's /health, else
        GET /v1/models (a gateway's own /health may cost a generation upstream)."""
        route = "/health" if self.has(server, "health") else "/v1/models"
        return route, self._probe_client(server).get(route).status_code

    def _probe_client(self, server: VllmServer) -> httpx.Client:
        where = (server.base_url, server.api_key)  # one model's server at a URL, another's key
        if where not in self._probe_clients:  # its requests are not the check's: not recorded
            self._probe_clients[where] = self.http(server, record=False)
        return self._probe_clients[where]

    def servers_seen(self) -> list[dict]:
        """What the report says of the servers tested: the remote one, or those launched; in a run of several
        targets, each target's, with the target's name."""
        if self.several:
            return [
                {"target": view.settings.targets[0].name, **seen}
                for view in self.views()
                for seen in view.servers_seen()
            ]
        if self.settings.url is None:
            launched = self.pool.launched() if self.shared_dir.exists() else []
            return [server.describe() for server in launched if self._launched_for(server)]
        try:
            return [self.main_server().describe()]
        except VllmServerError as error:
            return [{"url": self.settings.url, "error": str(error)}]

    def _launched_for(self, server: VllmServer) -> bool:
        """Whether a server the run launched is this target's: in a run of several targets, one that serves the
        target's model, or one of the embedded default's."""
        if self._run is self:
            return True
        if self.settings.model is not None:
            return server.model == self.settings.model
        return server.model in {self.settings.fixture_model, *EMBEDDED_BY_CAPABILITY.values()}

    def server_at(self, base_url: str, target: str = "") -> VllmServer | None:
        """The run's server at `base_url` (in a run of several targets, target `target`'s), with its key: the
        one at --vllm-url, or one launched (with a key, it has --vllm-api-key's, or the run's own: the keyed copy
        of the embedded default)."""
        if self.several:
            known = target in {t.name for t in self.settings.targets}
            return self.target(target).server_at(base_url) if known else None
        if self.settings.url is not None:
            try:
                servers = [self.main_server()]
            except VllmServerError:
                return None
        else:
            servers = self.pool.launched(key=self.settings.api_key or self._run_key())
        return next((server for server in servers if server.base_url == base_url), None)

    def answers(self, server: VllmServer) -> str | None:
        """None if `server` still serves, else how it does not: it refuses connections, or (a dead or
        wedged engine behind a live API server still lists its models) a one-token generation answers 500
        or nothing within `WEDGED_AFTER` s."""
        import httpx

        from pytest_vllm.launchers import auth_headers

        headers = auth_headers(server.api_key)
        try:
            httpx.get(f"{server.base_url}/v1/models", headers=headers, timeout=5)
        except httpx.TransportError:
            return "connection refused"
        known = {**server.capabilities, **self.overrides}  # as probed before: a wedged server is not probed now
        routes = [generation for c, generation in _ONE_TOKEN.items() if known.get(c)] or list(_ONE_TOKEN.values())
        wait = min(WEDGED_AFTER, self.settings.request_timeout)
        for route, fields in routes:  # the first that generates decides; a route it lacks does not
            body = {"model": server.model, "max_tokens": 1, **fields}
            try:
                status = httpx.post(f"{server.base_url}{route}", json=body, headers=headers, timeout=wait).status_code
            except httpx.TransportError:
                return f"a one-token generation got no answer within {wait:.0f} s: its engine is wedged"
            if status == 500:
                return "a one-token generation answered 500: its engine is broken"
            if status == 200:
                return None
        return None

    def stop_run(self, reason: str) -> bool:
        """Stop the run for every process: later checks end 'not run', with `reason`.

        False if another check stopped it first (this one is then collateral, not a finding).
        """
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.shared_dir / "stopped", "x") as marker:
                marker.write(reason)
        except FileExistsError:
            return False
        return True

    def stopped(self) -> str | None:
        try:
            return (self.shared_dir / "stopped").read_text()
        except OSError:
            return None

    def close(self) -> None:
        for client in self._probe_clients.values():
            client.close()
        if self._pool is not None or (self.owner and self.shared_dir.exists()):
            self.pool.close()
