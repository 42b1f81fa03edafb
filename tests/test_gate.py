"""The baseline gate: comparing verdicts check by check, and the exit status it gives a run."""

import json

import pytest

from pytest_vllm import gate

CHECKS = """
import os
import pytest

def test_stays():
    pass

def test_known():
    assert False, "param=None"

def test_changes():
    assert False, os.environ.get("HOW", "answered 500")

def test_fixed():
    pass
"""


def results(**outcomes):
    """A results file's records: name=(outcome, fingerprint)."""
    return {
        "checks": [
            {"id": f"test_checks.py::{name}", "outcome": outcome, "fingerprint": fp, "reason": fp}
            for name, (outcome, fp) in outcomes.items()
        ]
    }


BASELINE = results(
    test_stays=("passed", ""),
    test_known=("failed", "param=None"),
    test_changes=("failed", "answered 500"),
    test_fixed=("failed", "answered 200"),
    test_gone=("passed", ""),
)


@pytest.mark.parametrize(
    ("before", "now", "category"),
    [
        ("passed", "passed", "unchanged"),
        ("passed", "failed", "regressions"),
        ("passed", "unsupported", "regressions"),
        ("passed", "error", "regressions"),
        ("failed", "passed", "fixed"),
        ("failed", "unsupported", "regressions"),
        ("unsupported", "unsupported", "unchanged"),
        ("unsupported", "passed", "fixed"),
        ("unsupported", "failed", "regressions"),
    ],
)
def test_outcome_changes(before, now, category):
    comparison = gate.compare(
        {"c": {"outcome": before, "fingerprint": "x"}}, {"c": {"outcome": now, "fingerprint": "x"}}
    )
    counts = {name: len(getattr(comparison, name)) for name in ("regressions", "fixed", "known", "new", "missing")}
    counts["unchanged"] = comparison.unchanged
    assert counts[category] == 1 and sum(counts.values()) == 1, counts


def test_same_failure_is_known_and_another_fingerprint_is_a_regression():
    before = {"c": {"outcome": "failed", "fingerprint": "answered 500"}}
    assert gate.compare(before, {"c": {"outcome": "failed", "fingerprint": "answered 500"}}).ok
    changed = gate.compare(before, {"c": {"outcome": "failed", "fingerprint": "answered 502"}})
    assert not changed.ok
    assert changed.regressions == [("c", "failed differently: was «answered 500», now «answered 502»")]


NOT_RUN = {"outcome": "skipped", "reason": "not run: the server tiny-chat died during test_fuzz.py::test_x"}


def test_a_stopped_run_makes_the_gate_incomplete_not_clean():
    """Checks a stopped run did not judge are "not run" on either side, never new or unchanged."""
    baseline = {"a": {"outcome": "passed"}, "b": {"outcome": "failed", "fingerprint": "x"}, "c": NOT_RUN}
    complete = {"a": {"outcome": "passed"}, "b": {"outcome": "failed", "fingerprint": "x"}, "c": {"outcome": "passed"}}
    stopped = gate.compare(complete, {**complete, "b": NOT_RUN})
    assert not stopped.ok and [check for check, _ in stopped.not_run] == ["b"] and not stopped.known
    assert stopped.lines("base.json")[0].startswith("baseline base.json: INCOMPLETE: 0 regressions")
    truncated = gate.compare(baseline, {**complete, "d": {"outcome": "failed", "fingerprint": "y"}})
    assert not truncated.ok and not truncated.new and not truncated.fixed
    assert dict(truncated.not_run) == {
        "c": "the baseline's run stopped before it: not run: the server tiny-chat died during test_fuzz.py::test_x",
        "d": "the baseline's run stopped, and has no record of it",
    }


def test_records_without_ids_are_not_a_results_file(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"checks": [{"nodeid": "test_chat.py::test_x[a/b]", "outcome": "passed"}]}))
    with pytest.raises(ValueError, match="is not a pytest-vllm results file"):
        gate.load(path)


def test_the_run_exit_status_is_the_gates(pytester, monkeypatch, capsys):
    pytester.makepyfile(test_checks=CHECKS)
    baseline = pytester.path / "baseline.json"
    baseline.write_text(json.dumps(BASELINE))
    report = pytester.path / "report.json"
    result = pytester.runpytest("--vllm-baseline", str(baseline), "--vllm-report", str(report))
    assert result.ret == 1, "test_gone is missing"
    result.stdout.fnmatch_lines(
        [
            "baseline *baseline.json: FAIL: 0 regressions, 1 fixed, 2 known, 0 new, 1 missing, 0 not run, 1 unchanged",
            "missing: test_checks.py::test_gone: in the baseline, not in this run",
            "fixed: test_checks.py::test_fixed: failed → passed",
            "known: test_checks.py::test_changes: answered 500",
            "known: test_checks.py::test_known: param=None",
        ]
    )
    assert json.loads(report.read_text())["gate"]["ok"] is False
    from pytest_vllm.report import main as print_report

    print_report([str(report)])
    assert "FAIL: 0 regressions, 1 fixed, 2 known, 0 new, 1 missing" in capsys.readouterr().out

    del BASELINE["checks"][-1]  # no longer missing: the known failures alone leave the gate green
    baseline.write_text(json.dumps(BASELINE))
    assert pytester.runpytest("--vllm-baseline", str(baseline)).ret == 0

    monkeypatch.setenv("HOW", "answered 502")  # a known deviation failing differently
    result = pytester.runpytest("--vllm-baseline", str(baseline))
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["regression: test_checks.py::test_changes: failed differently: was «answered 500», now «answered 502»"]
    )


def test_gate_command_on_two_files(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(BASELINE))
    (tmp_path / "b.json").write_text(json.dumps(results(test_stays=("failed", "answered 500"))))
    assert gate.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    out = capsys.readouterr().out
    assert "regression: test_checks.py::test_stays: passed → failed: answered 500" in out
    assert gate.main([str(tmp_path / "a.json"), str(tmp_path / "missing.json")]) == 2


def test_bad_baseline_is_a_usage_error(pytester):
    (pytester.path / "not-results.json").write_text("[1, 2]")
    result = pytester.runpytest("--vllm-baseline", "not-results.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--vllm-baseline (--vllm-baseline): not-results.json is not a pytest-vllm results file*"]
    )


def test_the_report_command_has_a_help_and_a_clear_usage_error(capsys):
    from pytest_vllm.report import main as print_report

    with pytest.raises(SystemExit) as helped:
        print_report(["--help"])
    out = capsys.readouterr().out
    assert helped.value.code == 0 and out.startswith(
        "usage: python -m pytest_vllm.report [-h] [--format {text,md,html}]"
    )
    assert "FILE [FILE ...]" in out and "--budget BYTES" in out
    with pytest.raises(SystemExit) as refused:
        print_report([])
    assert refused.value.code == 2 and "the following arguments are required: FILE" in capsys.readouterr().err
