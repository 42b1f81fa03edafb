"""`pytest-vllm` / `python -m pytest_vllm`: run the shipped suites; pytest options pass through.

Select checks with pytest's own `-k` and `-m`; test your own files with plain `pytest`. The terminal
leads with the verdict (the plugin's table and one line per failure): tracebacks, recorded requests and
server logs are in the results file, and on the terminal with `--tb=...` or `-v`.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

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
    given = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *args]
    if not any(a.startswith("-r") for a in given):
        options.append("-rN")  # no "short test summary": the plugin's summary has each failure's reason
    return int(pytest.main([str(suites), *options, *args], plugins=[VerdictFirst(_given(given, "--tb"))]))


class VerdictFirst:
    """The runner's terminal ends with the plugin's summary, not pytest's FAILURES and ERRORS sections:
    each failure's traceback, requests and server log are in the results file (`details`), and on the
    terminal with `--tb=...` or `-v`."""

    def __init__(self, tb_given: bool) -> None:
        self.tb_given = tb_given

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        if not self.tb_given and config.get_verbosity() <= 0:
            config.option.tbstyle = "no"  # the reports, already made, keep their tracebacks

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        if config.option.tbstyle == "no" and (
            terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")
        ):
            terminalreporter.write_line(
                "each failure's traceback, requests and server log: in the results file, or here with -v"
            )


def _given(args: list[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in args)
