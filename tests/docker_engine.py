"""A real Docker engine for the docker launcher's tests: the one running, else dockerd started here (as root),
and the images they run: vLLM's CPU image (`pytest_vllm.cpu_image`) and the fake vLLM in a container."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytest_vllm import cpu_image
from pytest_vllm.outcomes import VllmServerError

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")
# Debian's engine as it runs on these machines: no iptables, so no bridge (containers share the host's network);
# the storage driver is dockerd's choice (overlay2 where the kernel has it: a container of the 4 GB vLLM image then
# starts in a second, where vfs copies the image for each one, 40 s here).
DOCKERD = ["dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none"]


@contextmanager
def engine(log_dir: Path) -> Iterator[object]:
    """A client of a running Docker engine (dockerd started for the block when none runs), or a string
    saying why none can be had."""
    try:
        from pytest_vllm.docker_launcher import client

        yield client()
        return
    except VllmServerError as error:
        unreachable = str(error)
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        why = "dockerd is not installed (apt-get install docker.io)" if os.geteuid() == 0 else "only root can start one"
        yield f"no Docker engine ({unreachable.split('. ')[0]}), and {why}"
        return
    log = open(log_dir / "dockerd.log", "wb")  # noqa: SIM115 (open while the engine runs)
    process = subprocess.Popen(DOCKERD, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield _wait_for_engine(process, log_dir / "dockerd.log")
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def _wait_for_engine(process: subprocess.Popen, log: Path) -> object:
    from pytest_vllm.docker_launcher import client

    deadline = time.monotonic() + 60
    while True:
        try:
            return client()
        except VllmServerError:
            if process.poll() is not None or time.monotonic() > deadline:
                return f"dockerd did not start: {log.read_text(errors='replace')[-2000:]}"
            time.sleep(0.5)


def fake_image(client) -> str:
    """An image whose entrypoint is the fake vLLM (tests/fake_vllm.py), on the CPU image's Debian base."""
    source = FAKE_VLLM.read_bytes()
    tag = f"pytest-vllm-test/fake-vllm:{hashlib.sha256(source + cpu_image.base_tag().encode()).hexdigest()[:12]}"
    if not client.images.list(name=tag):
        base = cpu_image.build_base(client, log=print)
        with tempfile.TemporaryDirectory() as context:
            shutil.copy(FAKE_VLLM, Path(context) / "fake_vllm.py")
            dockerfile = f'FROM {base}\nCOPY fake_vllm.py /fake_vllm.py\nENTRYPOINT ["python3", "/fake_vllm.py"]\n'
            (Path(context) / "Dockerfile").write_text(dockerfile)
            client.images.build(path=context, tag=tag, rm=True)
    return tag
