import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpcore  # noqa: F401
import openai  # noqa: F401
import pytest

from pytest_vllm.processes import free_port

# The HTTP stack is imported here, before any in-process pytester run: pytester restores
# sys.modules after each run, and httpcore (which httpx imports lazily) imported inside one
# and again later would leave two copies of its errors, the second escaping httpx's mapping.
pytest_plugins = ["pytester"]

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner pytest runs see no PYTEST_VLLM_* settings from the outer environment."""
    for name in list(os.environ):
        if name.startswith(("PYTEST_VLLM_", "FAKE_VLLM_")):
            monkeypatch.delenv(name)


@pytest.fixture
def fake_command() -> str:
    """A --vllm-command that starts the fake server instead of vLLM."""
    return shlex.join([sys.executable, str(FAKE_VLLM)])


@pytest.fixture
def fake_server(fake_command, tmp_path):
    """A running fake server with an API key, for the remote (--vllm-url) path."""
    port = free_port()
    env = {**os.environ, "VLLM_API_KEY": "sekrit-key-123"}
    process = subprocess.Popen(
        [sys.executable, fake_command.split()[-1], "--model", "served-a", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield url
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def real_vllm_turn(tmp_path_factory):
    """Held while a module's real vLLM servers live: the xdist workers of one session take turns, so
    test_faults.py's 3 servers and test_conformance.py's 4 (~3 GB each) never run at once on 24 GB.
    (`--dist loadgroup` cannot do it: under pytest 9.2 xdist 3.8's group suffix no longer reaches the
    nodeid, so marked groups are split across workers.) Only modules that take it wait for each other."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield  # one process runs the modules one after the other anyway
        return
    from filelock import FileLock

    with FileLock(str(tmp_path_factory.getbasetemp().parent / "real-vllm.lock")):
        yield
