"""Check ids name the check, not the install: a results file from one install gates a run from another."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_suites

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installs(tmp_path_factory):
    """The package installed twice, in two folders (as two venvs would hold it), plus the checkout."""
    folder = tmp_path_factory.mktemp("installs")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(folder / "wheel"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = (folder / "wheel").glob("*.whl")
    targets = []
    for name in ("venv-a", "venv-b"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(folder / name),
                str(wheel),
            ],
            check=True,
            capture_output=True,
        )
        targets.append(folder / name)
    return [*targets, ROOT]


def run_installed(location: Path, cwd: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The suites of the install at `location` against `url`, in `cwd`."""
    server = ["--vllm-url", url, "--vllm-api-key", "sekrit-key-123", "--vllm-request-timeout", "5"]
    env = {**os.environ, "PYTHONPATH": str(location)}
    return run_suites(*server, "-k", "models or health or errors or schema", *args, cwd=cwd, timeout=600, env=env)


def test_a_results_file_from_one_install_gates_a_run_from_another(installs, fake_server, tmp_path):
    first, *others = installs
    (tmp_path / "a").mkdir()
    done = run_installed(first, tmp_path / "a", fake_server, "--vllm-report", str(tmp_path / "a.json"))
    data = json.loads((tmp_path / "a.json").read_text())
    ids = [check["id"] for check in data["checks"]]
    assert len(ids) > 100 and len(set(ids)) == len(ids), done.stdout[-2000:]
    assert all(i.startswith("suites/test_") for i in ids), ids[:5]
    for other in others:
        cwd = tmp_path / other.name
        cwd.mkdir()
        done = run_installed(
            other, cwd, fake_server, "--vllm-baseline", str(tmp_path / "a.json"), "--vllm-report", str(cwd / "b.json")
        )
        assert done.returncode == 0, done.stdout[-3000:]
        gate = json.loads((cwd / "b.json").read_text())["gate"]
        assert (gate["new"], gate["missing"], gate["regressions"]) == ([], [], []), gate
        assert len(gate["known"]) + len(gate["fixed"]) + gate["unchanged"] == len(ids)
        assert "suites/test_models.py::" in done.stdout, "the terminal shows the same ids"
