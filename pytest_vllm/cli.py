"""`pytest-vllm` / `python -m pytest_vllm`: run the shipped suites; pytest options pass through.

Select checks with pytest's own `-k` and `-m`; test your own files with plain `pytest`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

DEFAULT_REPORT = "pytest-vllm-report.json"


def suites_dir() -> Path:
    """The conformance suites: the installed `pytest_vllm.suites`, or `suites/` of a checkout."""
    try:
        import pytest_vllm.suites
    except ModuleNotFoundError:  # run from a source checkout, where suites/ is not inside
        return Path(__file__).resolve().parent.parent / "suites"
    return Path(pytest_vllm.suites.__file__).parent


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not _given(args, "--vllm-report"):
        args += ["--vllm-report", DEFAULT_REPORT]
    suites = suites_dir()
    if not _given(args, "--rootdir"):  # ids `suites/test_x.py::...` wherever the package lives
        args += ["--rootdir", str(suites.parent)]
    # test_concurrency's async checks each get their own event loop (pytest-asyncio's default, said).
    options = ["-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function"]
    return int(pytest.main([str(suites), *options, *args]))


def _given(args: list[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in args)
