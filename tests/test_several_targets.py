"""Several targets in one run: --vllm-url and --vllm-model repeated, each check once per target.

Against fake servers (fake_vllm.py): how the options pair into targets, the target in each check's id,
one results file with each target's records and servers, the gate target by target, --vllm-prove's runs
per target, and clear usage errors. tests/test_endpoints.py runs the real three targets at once.
"""

import json
import re

import pytest

from pytest_vllm import gate, prove, render, settings
from pytest_vllm.launchers import VllmServer
from pytest_vllm.report import Record

CHECKS = """
import pytest

def test_models(vllm_server, vllm_http):
    assert vllm_http.get("/v1/models").json()["data"][0]["id"] == vllm_server.model

@pytest.mark.parametrize("n", [1, 2])
def test_one(vllm_server, n):
    assert n == 1, "not one"

def test_capability(vllm, vllm_server):
    assert not vllm.has(vllm_server, "tokenize"), "the override is every target's"
"""


def targets(pytester, *args):
    """The targets the options `args` make, as (name, url, model, key)."""
    config = pytester.parseconfig(*args)
    return [(t.name, t.url, t.model, t.api_key) for t in settings.resolve(config).targets]


def test_models_and_keys_belong_to_the_url_before_them(pytester, monkeypatch):
    a, b = "http://a:1", "http://b:2"
    assert targets(pytester) == [("embedded", None, None, None)]  # as ever: one target, the embedded default
    assert targets(pytester, "--vllm-model", "m", "--vllm-url", a) == [("a:1", a, "m", None)]  # as ever: m at a
    assert targets(pytester, "--vllm-url", a, "--vllm-model", "m1", "--vllm-model", "m2", "--vllm-url", b) == [
        ("a:1/m1", a, "m1", None),
        ("a:1/m2", a, "m2", None),
        ("b:2", b, None, None),
    ]
    assert targets(
        pytester, "--vllm-url", "launch", "--vllm-url", f"gw={a}/v1", "--vllm-api-key", "k", "--vllm-url", b
    ) == [("embedded", None, None, None), ("gw", a, None, "k"), ("b:2", b, None, None)]
    assert targets(pytester, "--vllm-url", "launch", "--vllm-model", "org/big", "--vllm-url", a) == [
        ("big", None, "org/big", None),
        ("a:1", a, None, None),
    ]
    assert targets(pytester, "--vllm-api-key", "k", "--vllm-url", a, "--vllm-url", b) == [
        ("a:1", a, None, "k"),  # one key: every target's
        ("b:2", b, None, "k"),
    ]
    monkeypatch.setenv("PYTEST_VLLM_MODEL", "env-model")  # not on the command line: the first URL's
    assert targets(pytester, "--vllm-url", f"x={a}", "--vllm-url", f"x={b}") == [
        ("x-1", a, "env-model", None),
        ("x-2", b, None, None),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vllm-url", "http://a:1", "--vllm-url", "b:2"], "*--vllm-url (--vllm-url): expected an http(s) URL*"),
        (
            ["--vllm-url", "http://a:1", "--vllm-api-key", "k1", "--vllm-api-key", "k2"],
            "*--vllm-api-key: one key per --vllm-url, http://a:1 was given several",
        ),
    ],
    ids=["url", "two-keys"],
)
def test_a_bad_target_is_a_usage_error(pytester, args, message):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_two_targets_in_one_run(pytester, fake_server, tmp_path):
    """Each check once per target (`-n 2`), the target leading its id; one results file; the gate, target by
    target, on a baseline with one verdict changed on one target."""
    pytester.makepyfile(test_x=CHECKS)
    other = f"http://127.0.0.1:{fake_server.rsplit(':', 1)[1]}"  # the same fake server, as another target
    report = tmp_path / "report.json"
    base = ["--vllm-api-key", "sekrit-key-123", "--vllm-url", f"a={fake_server}", "--vllm-url", other]
    args = [*base, "--vllm-model", "served-a", "--vllm-capability", "tokenize=no", "-n", "2", "-p", "xdist"]
    result = pytester.runpytest_subprocess(*args, "--vllm-report", str(report), "--dist", "loadscope", "-v")
    result.assert_outcomes(passed=6, failed=2)
    workers: dict[str, set[str]] = {}  # target: the workers that ran its checks
    for line in result.stdout.lines:  # "[gw0] [ 12%] PASSED test_x.py::test_one[a-1]"
        ran = re.match(r"(\[gw\d\]) .* test_x\.py::\w+\[([^]-]+)", line)
        if ran:
            workers.setdefault(ran[2], set()).add(ran[1])
    assert sorted(map(len, workers.values())) == [1, 1], f"--dist loadscope: a worker takes whole targets: {workers}"
    host = other.removeprefix("http://")
    lines = result.stdout.lines
    assert f"vllm: [a] server {fake_server}, vLLM 0.0.0-fake; model the first /v1/models lists" in lines, lines
    assert f"vllm: [{host}] server {other}, vLLM 0.0.0-fake; model served-a" in lines
    assert lines.index("target a:") < lines.index(f"target {host}:"), "each target's servers and table"
    assert "sekrit-key-123" not in result.stdout.str() + report.read_text()
    data = json.loads(report.read_text())
    assert {(s["target"], s["url"]) for s in data["servers"]} == {("a", fake_server), (host, other)}
    records = {gate.key(c): c for c in data["checks"]}
    checks = {f"test_x.py::test_{name}" for name in ("models", "one[1]", "one[2]", "capability")}
    assert {c["id"] for c in data["checks"]} == checks, "the check's own id, as in a run of one target"
    assert set(records) == {gate.with_target(check, t) for t in ("a", host) for check in checks}
    assert {"test_x.py::test_models[a]", f"test_x.py::test_one[{host}-2]"} <= set(records), "as pytest's ids"
    assert (
        records["test_x.py::test_one[a-2]"]["outcome"]
        == records[f"test_x.py::test_one[{host}-2]"]["outcome"]
        == "failed"
    )
    baseline = json.loads(report.read_text())
    changed = next(c for c in baseline["checks"] if gate.key(c) == f"test_x.py::test_models[{host}]")
    changed["outcome"] = changed["fingerprint"] = "failed"
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    gated = pytester.runpytest_subprocess(*args, f"--vllm-baseline={tmp_path / 'baseline.json'}")
    assert gated.ret == 0  # fixed on one target, the same elsewhere
    assert f"fixed: test_x.py::test_models[{host}]: failed → passed" in gated.stdout.lines
    gated.stdout.fnmatch_lines(
        ["baseline *: PASS: 0 regressions, 1 fixed, 2 known, 0 new, 0 missing, 0 not run, 5 unchanged"]
    )
    columns = render.load([str(report)])
    assert [(c.name, len(c.records)) for c in columns] == [("a", 4), (host, 4)]
    assert columns[0].identity == "vLLM 0.0.0-fake"


def test_prove_runs_each_targets_checks_against_its_own_server(monkeypatch):
    from pytest_vllm import targets as fault_targets

    monkeypatch.setattr(fault_targets, "TARGETS", (fault_targets.target("x", "breaks", "test_a"),))
    check = "suites/test_x.py::test_a"
    records = [
        Record(check, check, "x", "passed", "", "", "", 1.0, 0.0, server="http://gw", target=name)
        for name in ("gw/m1", "gw/m2")
    ]
    servers = {
        name: VllmServer("http://gw", name.split("/")[1], [], "unknown", "remote") for name in ("gw/m1", "gw/m2")
    }
    runs = []

    def execute(run: prove.Run) -> prove.Outcomes:
        runs.append((run.target, run.server.model, run.checks))
        return {check: ("failed" if run.target == "gw/m1" else "passed", "said so")}

    prove.prove(records, lambda url, target: servers[target], execute, lambda line: None)
    assert sorted(runs) == [("gw/m1", "m1", (check,)), ("gw/m2", "m2", (check,))]
    assert [r.proof for r in records] == ["proved", "unproved"]
