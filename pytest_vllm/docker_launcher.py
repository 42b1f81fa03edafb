"""vLLM in a Docker container (`--vllm-launcher docker --vllm-image IMAGE`), through the Docker SDK for Python.

The daemon is DOCKER_HOST's (with DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), else the local socket: never the CLI's
current context. The model, a hub id, is passed through; a local folder (and any other absolute path among the
serve arguments) is mounted read-only at the same path. The served port is published on 127.0.0.1 only (on a
daemon without a bridge network, the container shares the host's network and vLLM listens on 127.0.0.1). GPUs
go in through a device request where the daemon has NVIDIA's runtime; on a GPU (platforms.py), containers start one
at a time, each with its share of the GPU's memory.

Clean-up, in layers: every container carries the run's label and its owner; `stop` removes it after copying its
log into the run folder (the log is followed there while it runs), `close` removes any container of the run still
left, and the first launch of each process removes those whose run's owner is gone (killed with SIGKILL).
"""

from __future__ import annotations

import os
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_vllm import progress
from pytest_vllm.launchers import ServerSpec, VllmServer, new_log, serve_args, wait_ready
from pytest_vllm.outcomes import VllmServerError
from pytest_vllm.platforms import GpuPlan, gpu_launch, plan
from pytest_vllm.processes import free_port, stat_fields

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

    from pytest_vllm.settings import Settings

RUN_LABEL = "pytest-vllm.run"  # the run's folder name: every container of one run
OWNER_LABEL = "pytest-vllm.owner"  # "<host> <boot id> <pid> <start time>" of the process that owns the run
PORT = 8000  # where vLLM listens inside a container with a network of its own
SHM_SIZE = "2g"  # vLLM's processes share memory (its docs: --ipc=host or --shm-size)
_STOP_GRACE = 20
_reaped = False  # whether this process has removed the containers of dead runs


def client() -> docker.DockerClient:
    """A client of the pinned daemon (DOCKER_HOST, else the local socket), or an error saying how to get one."""
    try:
        import docker
        from docker.utils import kwargs_from_env
    except ImportError:
        raise VllmServerError(
            "--vllm-launcher docker needs the Docker SDK for Python: pip install 'pytest-vllm[docker]'"
        ) from None
    params = kwargs_from_env()
    try:
        docker_client = docker.DockerClient(timeout=120, **params)
        docker_client.ping()
    except docker.errors.DockerException as error:
        where = params.get("base_url") or "unix:///var/run/docker.sock"
        raise VllmServerError(
            f"Cannot reach the Docker daemon at {where}: {error}. Start it (dockerd), or point DOCKER_HOST at one."
        ) from None
    return docker_client


def nvidia_runtime(docker_client: docker.DockerClient) -> bool:
    """Whether the daemon has NVIDIA's runtime: its containers get the GPUs (a device request) then."""
    return "nvidia" in docker_client.info().get("Runtimes", {})


def running(container_id: str) -> bool:
    """Whether the container exists and runs (not if its daemon is gone)."""
    import docker

    try:
        return client().containers.get(container_id).status == "running"
    except (docker.errors.NotFound, VllmServerError):
        return False


def listed(docker_client: docker.DockerClient, **filters: str | list[str] | bool) -> list[Container]:
    """The containers (any state) that match `filters`, less those removed while being listed: the SDK inspects
    each one, and another run's container, or a stopped one the daemon is still deleting, may be gone by then."""
    return docker_client.containers.list(all=True, filters=filters, ignore_removed=True)


def remove(container: Container) -> None:
    """Remove the container, whatever its state, unless something else just did."""
    import docker

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as error:
        if error.status_code != 409:  # 409: its removal is already in progress
            raise


class DockerLauncher:
    """Runs vLLM in a container of `image`, one per `ServerSpec`, logging to a file of the run folder."""

    def __init__(self, image: str, command: str | None, request_timeout: float, gpu: GpuPlan | None = None) -> None:
        self.image = image
        self.command = shlex.split(command) if command else None
        self.request_timeout = request_timeout
        self.gpu = gpu  # how the run's servers share the GPU (platforms.py); None on the CPU
        self.abandon = threading.Event()
        self._client: docker.DockerClient | None = None
        self._followers: dict[str, threading.Thread] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerLauncher:
        assert settings.image is not None  # settings.resolve requires it with this launcher
        return cls(settings.image, settings.command, settings.request_timeout, plan(settings))

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = client()
        return self._client

    def start(self, spec: ServerSpec, workdir: Path, timeout: float, port: int | None = None) -> VllmServer:
        global _reaped
        if not _reaped:
            reap(self.client)
            _reaped = True
        entrypoint = self.command or self._entrypoint()
        keyed = " (with an API key)" if spec.api_key else ""
        with (
            progress.step(workdir, f"starting vLLM for {spec.name}{keyed} in {self.image}", done="ready"),
            gpu_launch(self.gpu, workdir, spec) as memory,
        ):
            return self._start(spec, workdir, timeout, entrypoint, port, memory)

    def _entrypoint(self) -> list[str]:
        """The image's entrypoint (pulled first if the daemon lacks it): vLLM's images start `vllm serve`."""
        import docker

        try:
            image = self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            try:
                image = self.client.images.pull(self.image)
            except docker.errors.DockerException as error:
                raise VllmServerError(
                    f"The image {self.image} is not on the Docker daemon and cannot be pulled ({error}). Pull or "
                    "build it first: without a registry, `python -m pytest_vllm.cpu_image` builds a CPU one."
                ) from None
        return list(image.attrs["Config"].get("Entrypoint") or [])

    def _start(
        self,
        spec: ServerSpec,
        workdir: Path,
        timeout: float,
        entrypoint: list[str],
        host_port: int | None,
        memory: list[str],
    ) -> VllmServer:
        """`host_port`: where the server answers on this host (None: a free one); `memory`: the arguments that
        give it its share of the GPU."""
        import docker

        bridged = bool(self.client.networks.list(names=["bridge"]))
        host, port = ("0.0.0.0", PORT) if bridged else ("127.0.0.1", host_port or free_port())
        args = [*serve_args(spec, entrypoint, host, port), *memory]
        env = dict(spec.env) | {name: os.environ[name] for name in ("HF_TOKEN",) if name in os.environ}
        mounts = _mounts(spec)
        gpus = nvidia_runtime(self.client)
        # On 127.0.0.1 only, on the port asked for, else one the daemon picks (None: the SDK's way to say so).
        published: dict[str, Any] | None = {f"{PORT}/tcp": ("127.0.0.1", host_port)} if bridged else None
        log_path = new_log(workdir, spec)
        log_path.write_bytes(b"")
        name = f"pytest-vllm-{workdir.name}-{spec.key}"
        started = time.monotonic()
        try:
            container = self.client.containers.run(
                self.image,
                args,
                entrypoint=self.command,
                environment=env | ({"VLLM_API_KEY": spec.api_key} if spec.api_key else {}),  # the key: not in argv
                volumes={path: {"bind": path, "mode": "ro"} for path in mounts},
                labels={RUN_LABEL: workdir.name, OWNER_LABEL: _owner(workdir)},
                name=name,
                shm_size=SHM_SIZE,
                init=True,  # docker's init as PID 1 hands SIGTERM to vLLM and reaps its processes
                ports=published,
                network_mode=None if bridged else "host",
                device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpus else None,
                detach=True,
            )
        except docker.errors.APIError as error:  # created, but it could not start (an entrypoint not found, ...)
            for created in listed(self.client, name=f"^/{name}$"):
                remove(created)
            raise VllmServerError(f"Docker could not start a container of {self.image}: {error.explanation}") from None
        self._follow(container, log_path)
        options = ["-p", f"127.0.0.1::{PORT}"] if bridged else ["--network=host"]
        options += [item for path in mounts for item in ("-v", f"{path}:{path}:ro")]
        options += [item for name, value in env.items() for item in ("-e", f"{name}={value}")]
        options += ["--gpus=all"] if gpus else []
        options += ["--entrypoint", entrypoint[0]] if self.command else []
        server = VllmServer(
            base_url="",
            model=spec.name,
            models=[],
            version="unknown",
            launched_by="docker",
            # The `docker run` line that starts the same container (without the key).
            launch_args=[
                "docker",
                "run",
                "--rm",
                "--init",
                f"--shm-size={SHM_SIZE}",
                *options,
                self.image,
                *entrypoint[1:],
                *args,
            ],
            api_key=spec.api_key,
            log_path=str(log_path),
            container=container.id,
        )
        try:
            server.base_url = f"http://127.0.0.1:{self._published(container, port) if bridged else port}"
            wait_ready(
                server, lambda: self._exit_code(container, log_path), timeout, self.request_timeout, self.abandon
            )
        except BaseException:
            self.stop(server)
            raise
        server.startup_seconds = round(time.monotonic() - started, 1)
        return server

    def _follow(self, container: Container, log_path: Path) -> None:
        """Append the container's output to `log_path` while it runs (a thread of this process)."""

        def follow() -> None:
            with open(log_path, "ab") as log:
                for chunk in container.logs(stream=True, follow=True):
                    log.write(chunk)
                    log.flush()

        thread = threading.Thread(target=follow, name=f"vllm-log-{container.short_id}", daemon=True)
        thread.start()
        self._followers[str(container.id)] = thread

    def _published(self, container: Container, port: int) -> str:
        """The host port the daemon published the container's `port` on."""
        while True:
            container.reload()
            bindings = (container.ports or {}).get(f"{port}/tcp")
            if bindings:
                return bindings[0]["HostPort"]
            code = self._exit_code(container, None)
            if code is not None:
                return "0"  # it exited: wait_ready says so, with its log
            time.sleep(0.1)

    def _exit_code(self, container: Container, log_path: Path | None) -> int | None:
        """The container's exit code once it has exited (its whole log copied to `log_path` first), else None."""
        container.reload()
        if container.status not in ("exited", "dead"):
            return None
        if log_path is not None:
            self._save_log(container, log_path)
        return int(container.attrs["State"]["ExitCode"])

    def _save_log(self, container: Container, log_path: Path) -> None:
        follower = self._followers.pop(str(container.id), None)
        if follower is not None:
            follower.join(timeout=5)
        log_path.write_bytes(container.logs())

    def stop(self, server: VllmServer) -> None:
        """Stop the server's container, keep its log in the run folder, remove it."""
        import docker

        try:
            container = self.client.containers.get(str(server.container))
        except docker.errors.NotFound:
            return
        container.stop(timeout=_STOP_GRACE)
        if server.log_path:
            self._save_log(container, Path(server.log_path))
        remove(container)

    def close(self, workdir: Path) -> None:
        """Remove every container of the run still left (one started when the run was interrupted)."""
        for container in listed(self.client, label=f"{RUN_LABEL}={workdir.name}"):
            remove(container)


def reap(docker_client: docker.DockerClient) -> int:
    """Remove the containers of runs whose owner is gone (as testcontainers' reaper does); how many."""
    removed = 0
    for container in listed(docker_client, label=RUN_LABEL):
        if not _owner_alive(container.labels.get(OWNER_LABEL, "")):
            remove(container)
            removed += 1
    return removed


def _owner(workdir: Path) -> str:
    """The run's owner: the process whose id names the run folder (session.new_shared_dir), else this one."""
    head = workdir.name.partition("-")[0]
    pid = int(head) if head.isdigit() else os.getpid()
    fields = stat_fields(pid) or []
    return f"{socket.gethostname()} {_boot_id()} {pid} {fields[19] if len(fields) > 19 else '?'}"


def _owner_alive(owner: str) -> bool:
    """False when the owner ran on this host and is gone: another boot, its process ended, or its pid now names
    a process started later. A run of another host is left to that host."""
    host, boot, pid, started = [*owner.split(), "", "", "", ""][:4]
    if host != socket.gethostname():
        return True
    if boot != _boot_id() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    fields = stat_fields(int(pid))
    return not fields or (fields[0] != "Z" and started in ("?", fields[19]))


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def _mounts(spec: ServerSpec) -> list[str]:
    """The local paths the server reads: the model folder, and absolute paths among the serve arguments."""
    candidates = [spec.model, *(arg.rpartition("=")[2] for arg in spec.serve_args)]
    paths = sorted({os.path.abspath(path) for path in candidates if path.startswith("/") and os.path.exists(path)})
    return [path for path in paths if not any(path.startswith(other + os.sep) for other in paths)]
