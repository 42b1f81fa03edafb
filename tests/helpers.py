"""Helpers of the plugin's tests: the shipped suites run in a subprocess, and their results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_suites(
    *args: str, cwd: Path, timeout: float, env: dict[str, str] | None = None, module: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The shipped suites run as a user runs them, in a subprocess in `cwd`: `python -m pytest_vllm <args>`.

    With `module`, `python -m pytest <the installed suites>/test_<module>.py <args>` instead (the plugin
    loads from its entry point; collecting one module instead of all saves about 2.5 s a run).
    """
    if module is None:
        argv = [sys.executable, "-m", "pytest_vllm"]
    else:
        from pytest_vllm.cli import suites_dir

        argv = [sys.executable, "-m", "pytest", str(suites_dir() / f"test_{module}.py"), "-p", "no:cacheprovider"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def load_results(report: Path, output: str) -> dict:
    """The results file `report` a run wrote; the run's `output` says why there is none."""
    assert report.exists(), f"the run wrote no results file:\n{output}"
    return json.loads(report.read_text())
