"""Real OpenAI-compatible endpoints that are not a bare vLLM, for tests/test_endpoints.py.

- LiteLLM's proxy (`litellm[proxy]`), a gateway, in front of the embedded tiny-chat on vLLM.
- llama.cpp's server (`llama-cpp-python[server]`, built from source) serving tiny-chat
  converted to GGUF by the converter in llama-cpp-python's source distribution.

Each venv, the source distribution and the GGUF are cached under the pytest-vllm cache by
content hash (the requirement, the model folder and converter version), so only a cold
machine pays the ~5 minute llama.cpp build. Servers are started as subprocesses with their
logs in the test's folder and stopped (process group) on exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from filelock import FileLock

from pytest_vllm.processes import free_port, stop_process_group
from pytest_vllm.settings import cache_root

LITELLM = "litellm[proxy]==1.108.7"
LLAMA_CPP_VERSION = "0.3.36"
LLAMA_CPP = f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}"
MODEL = "tiny-chat"
READY_SECONDS = 180


def _cache(name: str) -> Path:
    folder = cache_root() / "endpoints" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def venv(requirement: str) -> Path:
    """The python of a venv holding `requirement`, made once per requirement (and reused)."""
    folder = _cache(f"venv-{_digest(requirement, sys.version)}")
    python = folder / "bin" / "python"
    with FileLock(f"{folder}.lock"):
        if not (folder / "done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
            env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}  # its own packages only
            env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count() or 2)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", requirement], check=True, env=env)
            (folder / "done").write_text(requirement)
    return python


def _converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py folder, from llama-cpp-python's source distribution."""
    folder = _cache(f"llama-cpp-python-{LLAMA_CPP_VERSION}-converter")
    with FileLock(f"{folder}.lock"):
        if not (folder / "convert_hf_to_gguf.py").exists():
            download = _cache(f"llama-cpp-python-{LLAMA_CPP_VERSION}-sdist")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                    "-d",
                    str(download),
                ],
                check=True,
            )
            [sdist] = download.glob("*.tar.gz")
            prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
            with tarfile.open(sdist) as archive:
                members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
                for member in members:
                    member.name = member.name.removeprefix(prefix)
                archive.extractall(folder, members=members, filter="data")
            shutil.rmtree(download)
    return folder


# The converter only knows the pre-tokenizers of published models by a hash of their output; the
# tiny model's byte-level BPE uses GPT-2's pre-tokenizer, so it is told that (runs in the converter's python).
_CONVERT = """
import runpy, sys
root = sys.argv.pop(1)
sys.path[:0] = [root, root + "/gguf-py"]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv[0] = root + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def tiny_gguf() -> Path:
    """tiny-chat as a float32 GGUF (its chat template included), converted once per model build."""
    from pytest_vllm import fixture_models

    model = fixture_models.build(MODEL)
    target = _cache(f"{model.name}-{LLAMA_CPP_VERSION}.gguf")
    with FileLock(f"{target}.lock"):
        if not target.exists():
            partial = target.with_suffix(".partial")
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _CONVERT,
                    str(_converter()),
                    str(model),
                    "--outtype",
                    "f32",
                    "--outfile",
                    str(partial),
                ],
                check=True,
                capture_output=True,
            )
            partial.rename(target)
    return target


@contextlib.contextmanager
def _serving(argv: list[str], url: str, log: Path, env: dict | None = None) -> Iterator[str]:
    """Run `argv` until it serves GET {url}/v1/models; yield `url`; stop it."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {READY_SECONDS} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(process.pid)


@contextlib.contextmanager
def tiny_vllm(workdir: Path) -> Iterator[str]:
    """The embedded default's tiny-chat on vLLM (LoRA adapters, hermes tools), no key: its URL."""
    from pytest_vllm import fixture_models
    from pytest_vllm.launchers import ServerSpec, SubprocessLauncher
    from pytest_vllm.session import EMBEDDED_ENV

    path = fixture_models.build(MODEL)
    spec = ServerSpec(str(path), MODEL, tuple(fixture_models.serve_args(MODEL, path)), EMBEDDED_ENV)
    launcher = SubprocessLauncher(None, request_timeout=120)
    server = launcher.start(spec, workdir, timeout=900)
    try:
        yield server.base_url
    finally:
        launcher.stop(server)


@contextlib.contextmanager
def litellm_proxy(upstream: str, workdir: Path) -> Iterator[str]:
    """LiteLLM's proxy routing model tiny-chat to the vLLM at `upstream` (its `hosted_vllm`
    provider); no master key, and its price list read locally, not downloaded."""
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        f"    litellm_params: {{model: hosted_vllm/{MODEL}, api_base: {upstream}/v1}}\n"
        "litellm_settings: {drop_params: false}\n"
    )
    port = free_port()
    litellm = venv(LITELLM).parent / "litellm"
    env = {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    argv = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with _serving(argv, f"http://127.0.0.1:{port}", workdir / "litellm.log", env) as url:
        yield url


@contextlib.contextmanager
def llama_cpp_server(workdir: Path) -> Iterator[str]:
    """llama.cpp's server (llama-cpp-python) serving tiny-chat's GGUF as model tiny-chat."""
    port = free_port()
    argv = [
        str(venv(LLAMA_CPP)),
        "-m",
        "llama_cpp.server",
        "--model",
        str(tiny_gguf()),
        "--model_alias",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "1024",
    ]
    with _serving(argv, f"http://127.0.0.1:{port}", workdir / "llama-cpp.log") as url:
        yield url
