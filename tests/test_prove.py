"""--vllm-prove: passed checks run again through the faults that target them.

Against real vLLM (the embedded default), a handful of checks: those a fault targets are proved, one a
harmless fault is made to target (a test plugin adds the row) is unproved, the others untargeted. The
outcome logic and a broken fault run, without vLLM.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
from typing import ClassVar

import pytest
from helpers import load_results, run_suites

from pytest_vllm import prove, targets
from pytest_vllm.launchers import VllmServer
from pytest_vllm.report import Record, main
from pytest_vllm.settings import Settings

HEALTH = "suites/test_health.py::test_health_is_200_with_empty_body"
VERSION = "suites/test_health.py::test_version_is_a_version_string"
PING = "suites/test_health.py::test_ping_is_200[GET]"
# A test plugin (`-p`) that makes a harmless fault target PING: /version answering "dev" leaves /ping alone.
EXTRA_TARGET = """
from pytest_vllm import targets

targets.TARGETS += (targets.target("health", "version-dev", "test_ping_is_200[GET]"),)
"""


@pytest.fixture(scope="module")
def proving(real_vllm_turn, tmp_path_factory):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed here")
    folder = tmp_path_factory.mktemp("prove")
    (folder / "extra_target.py").write_text(EXTRA_TARGET)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    report = folder / "report.json"
    args = ["-p", "extra_target", "--vllm-prove", "-k", "test_health or test_stop_string", "--vllm-report", str(report)]
    done = run_suites(*args, cwd=folder, timeout=900, env=env)
    data = load_results(report, done.stdout[-3000:] + done.stderr[-3000:])
    return {check["id"]: check for check in data["checks"]}, data["proof"], done.stdout


def test_prove_proves_the_passes_a_fault_breaks(proving):
    checks, proof, output = proving
    proved = {check: checks[check]["proof_reason"] for check in checks if checks[check]["proof"] == "proved"}
    assert HEALTH in proved and VERSION in proved and "suites/test_chat.py::test_stop_string[stop-excluded]" in proved
    assert proved[HEALTH].startswith("fails under fault health-json-body: /health body should be empty"), proved
    assert checks["suites/test_health.py::test_ping_is_200[POST]"]["proof"] == "untargeted"
    assert proof["proved"] == len(proved) and proof["inconclusive"] == 0, proof
    assert "vllm: proving: fault health-json-body (1 check on tiny-chat) ..." in output
    assert f"proof of the passes: {len(proved)} proved, 1 unproved, 0 inconclusive" in output


def test_prove_shows_a_pass_no_fault_breaks_as_unproved(proving):
    checks, proof, output = proving
    assert checks[PING]["outcome"] == "passed" and checks[PING]["proof"] == "unproved", checks[PING]
    assert proof["unproved"] == 1
    assert f"1 pass unproved:\nunproved: {PING}: passes under fault version-dev, which should break it" in output
    header = next(line for line in output.splitlines() if line.startswith("area "))
    assert header.split()[-1] == "unproved", "the table counts the unproved passes"


def _record(check: str, outcome: str = "passed", server: str = "http://a") -> Record:
    return Record(check, check, "area", outcome, "", "", "", 1.0, 0.0, server=server)


def _server(url: str = "http://a") -> VllmServer:
    return VllmServer(url, "model-a", ["model-a"], "0.32.0", "test")


def test_each_pass_gets_its_proof_from_the_runs_of_the_faults_that_target_it(monkeypatch):
    monkeypatch.setattr(
        targets,
        "TARGETS",
        (
            targets.target("x", "breaks", "test_a", "test_b[*]"),
            targets.target("x", "harmless", "test_b[*]", "test_c"),
            targets.target("x", "refused", "test_d"),
            targets.target("x", "elsewhere", "test_e"),
        ),
    )
    a, b, c, d, e = (f"suites/test_x.py::test_{name}" for name in ("a", "b[1]", "c", "d", "e"))
    records = [_record(a), _record(b), _record(c), _record(d), _record(e, server="http://gone"), _record("other")]
    records.append(_record("suites/test_x.py::test_a", outcome="failed"))  # not passed: not proved
    outcomes = {"breaks": "failed", "harmless": "passed", "refused": "unsupported", "elsewhere": "failed"}
    runs = []

    def execute(run: prove.Run) -> prove.Outcomes:
        runs.append((run.fault, run.server.base_url, run.checks))
        return dict.fromkeys(run.checks, (outcomes[run.fault], f"{run.fault} says so"))

    lines: list[str] = []
    summary = prove.prove(records, lambda url, target: _server() if url == "http://a" else None, execute, lines.append)
    assert sorted(runs) == [
        ("breaks", "http://a", (a, b)),
        ("harmless", "http://a", (b, c)),
        ("refused", "http://a", (d,)),
    ]
    proofs = {r.id: (r.proof, r.proof_reason) for r in records if r.outcome == "passed"}
    assert proofs == {
        a: ("proved", "fails under fault breaks: breaks says so"),
        b: ("proved", "fails under fault breaks: breaks says so"),
        c: ("unproved", "passes under fault harmless, which should break it"),
        d: ("inconclusive", "under fault refused: unsupported: refused says so"),
        e: ("inconclusive", "under fault elsewhere: inconclusive: the server it ran against is not known"),
        "other": ("untargeted", ""),
    }
    assert records[-1].proof == ""
    assert {k: summary[k] for k in ("proved", "unproved", "inconclusive", "untargeted", "runs")} == {
        "proved": 2,
        "unproved": 1,
        "inconclusive": 2,
        "untargeted": 1,
        "runs": 3,
    }
    assert "proving: fault breaks (2 checks on model-a) ..." in lines and "proving: fault breaks: 2 of 2 fail" in [
        line.rsplit(" (", 1)[0] for line in lines
    ]


def test_a_fault_run_that_breaks_leaves_its_checks_inconclusive(monkeypatch):
    monkeypatch.setattr(
        targets, "TARGETS", (targets.target("health", "version-dev", "test_version_is_a_version_string"),)
    )

    def execute(run):
        raise ConnectionRefusedError("the proxy could not start")

    records = [_record(VERSION)]
    prove.prove(records, lambda url, target: _server(), execute, lambda line: None)
    assert records[0].proof == "inconclusive"
    assert "the fault's run broke: ConnectionRefusedError('the proxy could not start')" in records[0].proof_reason


class _Process:
    """Stands in for the subprocess of a fault's run: it hangs (until killed), or exits 4 saying "boom"."""

    started: ClassVar[list] = []
    hangs = True

    def __init__(self, argv, **kwargs):
        self.started.append((argv, kwargs))
        self.argv, self.killed, self.returncode = argv, False, 4

    def communicate(self, timeout=None):
        if self.hangs and not self.killed:
            raise subprocess.TimeoutExpired(self.argv, timeout)
        return "boom", None

    def kill(self):
        self.killed = True


def test_a_fault_run_gets_the_key_in_its_environment_and_a_timeout(monkeypatch, fake_server):
    """The run of the suites a fault makes: the key in PYTEST_VLLM_API_KEY (never in argv), none of this run's
    options (it would prove again), and a timeout; one that times out or writes no results is inconclusive."""
    monkeypatch.setenv("PYTEST_VLLM_PROVE", "yes")
    monkeypatch.setattr(prove.subprocess, "Popen", _Process)
    server = VllmServer(fake_server, "served-a", ["served-a"], "0.32.0", "test", api_key="sekrit-key-123")
    run = prove.Run("version-dev", server, (VERSION,), 2.0)
    with prove.Runner(Settings(request_timeout=30.0)) as runner:
        assert runner(run) == {VERSION: ("inconclusive", "the fault's run timed out after 156 s")}
        monkeypatch.setattr(_Process, "hangs", False)
        assert runner(run) == {VERSION: ("inconclusive", "the fault's run wrote no results (exit 4): boom")}
    argv, kwargs = _Process.started[0]
    assert "sekrit-key-123" not in " ".join(argv) and kwargs["env"]["PYTEST_VLLM_API_KEY"] == "sekrit-key-123"
    assert "PYTEST_VLLM_PROVE" not in kwargs["env"] and "--vllm-prove" not in argv
    assert argv[argv.index("--vllm-model") + 1] == "served-a"
    assert argv[3].endswith("test_health.py::test_version_is_a_version_string"), argv


def test_prove_is_a_switch(pytester, monkeypatch):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    pytester.runpytest("--vllm-prove").stdout.fnmatch_lines(["vllm: --vllm-prove (--vllm-prove)"])
    monkeypatch.setenv("PYTEST_VLLM_PROVE", "yes")
    pytester.runpytest().stdout.fnmatch_lines(["vllm: --vllm-prove (env PYTEST_VLLM_PROVE)"])
    monkeypatch.setenv("PYTEST_VLLM_PROVE", "perhaps")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vllm-prove (env PYTEST_VLLM_PROVE): expected yes or no*"])


def test_a_results_file_shows_its_proof(tmp_path, capsys):
    """`python -m pytest_vllm.report FILE` prints a proving run's findings as the run did."""
    check = {**dataclasses.asdict(_record(PING)), "proof": "unproved", "proof_reason": "passes under fault version-dev"}
    data = {
        "servers": [],
        "counts": {"health": {"passed": 1, "unproved": 1}},
        "checks": [check],
        "proof": {"proved": 0, "unproved": 1, "inconclusive": 0, "untargeted": 0, "runs": 1, "seconds": 3.0},
    }
    (tmp_path / "r.json").write_text(json.dumps(data))
    main([str(tmp_path / "r.json")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-1] == "unproved" and lines[2].split()[-1] == "1", lines
    assert lines[3:] == [
        "proof of the passes: 0 proved, 1 unproved, 0 inconclusive, 0 untargeted (1 fault runs, 3 s)",
        "1 pass unproved:",
        f"unproved: {PING}: passes under fault version-dev",
    ]
