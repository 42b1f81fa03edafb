"""The plugin's own behaviour, driven through pytester (options, header, errors, reports, xdist).

Servers here are the fake in fake_vllm.py: these tests are about the plugin, not vLLM.
"""

import json
import signal
import subprocess
import sys
import time

import pytest
from helpers import load_results, run_suites

from pytest_vllm.launchers import ServerSpec, SubprocessLauncher
from pytest_vllm.pool import ServerPool
from pytest_vllm.processes import alive, free_port

USES_SERVER = """
def test_uses_server(vllm_server, vllm_http):
    assert vllm_http.get("/health").status_code == 200
"""


def test_option_precedence_cli_over_env_over_ini(pytester, monkeypatch):
    pytester.makeini("[pytest]\nvllm_request_timeout = 7\nvllm_startup_timeout = 8\nvllm_model = ini-model\n")
    monkeypatch.setenv("PYTEST_VLLM_STARTUP_TIMEOUT", "9")
    monkeypatch.setenv("PYTEST_VLLM_MODEL", "env-model")
    result = pytester.runpytest("--vllm-model", "cli-model", "--collect-only")
    result.stdout.fnmatch_lines(
        [
            "vllm: launches vLLM*; model cli-model",
            "vllm: --vllm-model=cli-model (--vllm-model)",
            "vllm: --vllm-launcher=subprocess (default)",
            "vllm: --vllm-startup-timeout=9 (env PYTEST_VLLM_STARTUP_TIMEOUT)",
            "vllm: --vllm-request-timeout=7 (ini vllm_request_timeout)",
        ]
    )


def test_repeatable_options_from_cli_and_env(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_VLLM_SERVE_ARG", "--dtype float32")
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["vllm: --vllm-serve-arg=--dtype float32 (env PYTEST_VLLM_SERVE_ARG)"])
    result = pytester.runpytest("--collect-only", "--vllm-serve-arg=--enforce-eager", "--vllm-serve-arg=-O0")
    result.stdout.fnmatch_lines(["vllm: --vllm-serve-arg=--enforce-eager -O0 (--vllm-serve-arg)"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vllm-launcher", "kubernetes"], "*--vllm-launcher (--vllm-launcher): valid launchers: subprocess*"),
        (["--vllm-startup-timeout", "-3"], "*--vllm-startup-timeout*expected a positive number of seconds*"),
        (["--vllm-request-timeout", "soon"], "*--vllm-request-timeout*expected a positive number of seconds*"),
        (["--vllm-url", "localhost:8000"], "*--vllm-url*expected an http(s) URL such as http://localhost:8000*"),
        (["--vllm-url", "http://u:p@host:1"], "*put credentials in --vllm-api-key, not in the URL*"),
        (["--vllm-capability", "telepathy=yes"], "*NAME=yes|no with NAME one of: completions, chat*"),
    ],
    ids=["launcher", "startup-timeout", "request-timeout", "url-scheme", "url-credentials", "capability"],
)
def test_bad_option_values_are_usage_errors(pytester, args, message):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_a_misspelled_capability_is_a_usage_error_at_collection(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.vllm_requires("tool")
        def test_tools(vllm_server):
            pass
        """
    )
    result = pytester.runpytest("--vllm-url", "http://127.0.0.1:9")  # collection alone: no server is asked
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    stderr = result.stderr.str()
    assert "test_tools: @pytest.mark.vllm_requires names unknown capabilities ['tool']; valid: " in stderr
    assert ", tools, " in stderr and "Traceback" not in stderr


def test_bad_env_value_names_the_env_var(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_VLLM_LAUNCHER", "k8s")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*--vllm-launcher (env PYTEST_VLLM_LAUNCHER): valid launchers*"])


def test_unreachable_url_is_one_clear_error_and_stops(pytester):
    pytester.makepyfile(test_a=USES_SERVER, test_b=USES_SERVER)
    url = f"http://127.0.0.1:{free_port()}"
    result = pytester.runpytest("--vllm-url", url, "--vllm-request-timeout", "3")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*Cannot reach a vLLM server at {url}*--vllm-url is right*"])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize("key", [None, "wrong-key"], ids=["no-key", "wrong-key"])
def test_bad_key_says_401_and_how_to_pass_the_key(pytester, fake_server, key):
    pytester.makepyfile(USES_SERVER)
    args = ["--vllm-url", fake_server] + (["--vllm-api-key", key] if key else [])
    result = pytester.runpytest(*args)
    result.assert_outcomes(errors=1)
    hint = "the key given was rejected" if key else "no key was given"
    result.stdout.fnmatch_lines([f"*answered 401 Unauthorized ({hint})*--vllm-api-key*"])


def test_model_not_served_lists_the_served_ids(pytester, fake_server):
    pytester.makepyfile(USES_SERVER)
    result = pytester.runpytest("--vllm-url", fake_server, "--vllm-api-key", "sekrit-key-123", "--vllm-model", "other")
    result.stdout.fnmatch_lines(["*does not serve model 'other'. It serves: served-a*"])


def test_key_never_appears_in_output_or_report(pytester, fake_server):
    pytester.makepyfile(USES_SERVER + "\ndef test_fails(vllm_http):\n    vllm_http.get('/v1/models')\n    assert 0\n")
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        "--vllm-url", fake_server, "--vllm-api-key", "sekrit-key-123", "--vllm-report", str(report), "-rA"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["vllm: --vllm-api-key=*** (--vllm-api-key)", "*$VLLM_API_KEY*"])
    assert "sekrit-key-123" not in result.stdout.str() + result.stderr.str()
    assert "sekrit-key-123" not in report.read_text()


@pytest.mark.parametrize("asked", [[], ["--vllm-perf"], ["--vllm-perf", "--vllm-parity"]])
def test_opt_in_checks_run_only_when_asked(pytester, fake_server, asked):
    pytester.makepyfile("""
        import pytest

        def test_always():
            pass

        @pytest.mark.vllm_perf
        def test_perf():
            pass

        @pytest.mark.vllm_parity
        def test_parity():
            pass
    """)
    result = pytester.runpytest("--vllm-url", fake_server, "--vllm-api-key", "sekrit-key-123", *asked)
    result.assert_outcomes(passed=1 + len(asked), deselected=2 - len(asked))


def test_a_goodput_slo_names_a_metric_vllm_sets_slos_on(pytester):
    result = pytester.runpytest("--collect-only", "--vllm-perf-slo", "ttft:500 itl:20")
    result.stderr.fnmatch_lines(["*--vllm-perf-slo*goodput SLO itl:20.0 is invalid: name one of*ttft*tpot*e2el*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_failure_shows_requests_and_curl(pytester, fake_server):
    pytester.makepyfile("def test_fails(vllm_http):\n    vllm_http.get('/v1/models')\n    assert 0\n")
    result = pytester.runpytest("--vllm-url", fake_server, "--vllm-api-key", "sekrit-key-123")
    result.stdout.fnmatch_lines(  # plain pytest: the traceback, then the plugin's sections
        [
            "*= FAILURES =*",
            "*assert 0*",
            "*- vllm requests -*",
            f"> GET {fake_server}/v1/models",
            "< 200",
            f'repeat: curl -sS -X GET {fake_server}/v1/models -H "Authorization: Bearer $VLLM_API_KEY"',
        ]
    )


def test_unsupported_is_its_own_outcome_and_in_the_report(pytester, fake_server):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.vllm_requires("tools")
        def test_tools(vllm_server):
            assert False, "never runs"

        def test_plain(vllm_server):
            pass
    """)
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        "--vllm-url",
        fake_server,
        "--vllm-api-key",
        "sekrit-key-123",
        "--vllm-capability",
        "tools=no",
        "--vllm-report",
        str(report),
    )
    result.stdout.fnmatch_lines(["vllm: --vllm-capability=tools=no (--vllm-capability)", "*1 passed*1 unsupported*"])
    checks = {c["nodeid"].split("::")[1]: c for c in json.loads(report.read_text())["checks"]}
    assert checks["test_tools"]["outcome"] == "unsupported"
    assert "lacks 'tools'" in checks["test_tools"]["reason"]
    assert checks["test_plain"]["outcome"] == "passed"


def test_report_records_checks_server_and_areas(pytester, fake_server):
    pytester.makepyfile(test_models=USES_SERVER + "\ndef test_bad():\n    assert 1 == 2\n")
    report = pytester.path / "out" / "report.json"
    result = pytester.runpytest(
        "--vllm-url", fake_server, "--vllm-api-key", "sekrit-key-123", "--vllm-report", str(report)
    )
    result.stdout.fnmatch_lines(
        ["*vllm conformance*", "server: served-a at *0.0.0-fake*remote*", "models *1 *1 *0 *0 *0", f"results: {report}"]
    )
    data = json.loads(report.read_text())
    assert data["servers"] == [
        {
            "url": fake_server,
            "model": "served-a",
            "models": ["served-a"],
            "version": "0.0.0-fake",
            "identity": "vLLM 0.0.0-fake",
            "launched_by": "remote",
            "launch_args": [],
            "startup_seconds": None,
            "relaunches": 0,
        }
    ]
    outcomes = {c["nodeid"]: (c["area"], c["outcome"]) for c in data["checks"]}
    assert outcomes == {
        "test_models.py::test_uses_server": ("models", "passed"),
        "test_models.py::test_bad": ("models", "failed"),
    }


def launch_args(fake_command, *extra):
    return ["--vllm-command", fake_command, "--vllm-model", "fake-model", "--vllm-startup-timeout", "30", *extra]


def test_launched_server_log_goes_to_failing_tests_only(pytester, fake_command):
    pytester.makepyfile(USES_SERVER + "\ndef test_fails(vllm_server):\n    assert False\n")
    result = pytester.runpytest_subprocess(*launch_args(fake_command), "-rA")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert output.count("vllm server log (fake-model)") == 1
    result.stdout.fnmatch_lines(
        ["*_ test_fails _*", "*- vllm server log (fake-model) -*", "fake vllm starting in mode ok"]
    )


def test_crashing_server_fails_fast_with_its_log(pytester, fake_command, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "crash")
    pytester.makepyfile(test_a=USES_SERVER, test_b=USES_SERVER)
    result = pytester.runpytest_subprocess(*launch_args(fake_command, "--vllm-startup-timeout", "3600"))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*vLLM exited with code 1 before it was ready*",  # at once, not at the timeout
            "*ValueError: No supported config format found in /broken/model*",
        ]
    )


def test_hanging_server_times_out_with_a_hint(pytester, fake_command, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    pytester.makepyfile(USES_SERVER)
    result = pytester.runpytest_subprocess(*launch_args(fake_command, "--vllm-startup-timeout", "2"))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*vLLM was not ready after 2 s*Raise --vllm-startup-timeout*"])


def test_a_check_that_kills_a_launched_server_fails_and_the_run_goes_on(pytester, fake_command, monkeypatch, tmp_path):
    """The check that killed the server kills the relaunched one too when it runs again alone: it fails, with its
    curl; the server is relaunched and every later check is judged."""
    starts = tmp_path / "starts"
    monkeypatch.setenv("FAKE_VLLM_MODE", "die")
    monkeypatch.setenv("FAKE_VLLM_STARTS", str(starts))
    pytester.makepyfile("""
        def test_1_kills_it(vllm_http):
            vllm_http.get("/v1/die")

        def test_2_later(vllm_http):
            assert vllm_http.get("/v1/models").status_code == 200

        def test_3_later(vllm_server):
            pass
    """)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        *launch_args(fake_command, "--vllm-request-timeout", "5"), "--vllm-report", str(report)
    )
    result.assert_outcomes(failed=1, passed=2)
    data = json.loads(report.read_text())
    [killer] = [c for c in data["checks"] if c["outcome"] == "failed"]
    assert killer["reason"].startswith("the server fake-model died during the run (its process exited")
    assert killer["reason"].endswith("; and again when this check ran alone on a relaunched server")
    assert killer["curl"].endswith("/v1/die")
    assert len(starts.read_text().split()) == 3, "launched, then relaunched after each of the two deaths"
    assert data["servers"][0]["relaunches"] == 2
    result.stdout.fnmatch_lines(["server: fake-model at * (vLLM 0.0.0-fake, subprocess, *relaunched 2x after it died)"])


def test_xdist_workers_share_one_launched_server(pytester, fake_command, monkeypatch, tmp_path):
    starts = tmp_path / "starts"
    monkeypatch.setenv("FAKE_VLLM_STARTS", str(starts))
    pytester.makepyfile(**{f"test_{i}": USES_SERVER for i in range(4)})
    result = pytester.runpytest_subprocess(*launch_args(fake_command), "-n", "2")
    result.assert_outcomes(passed=4)
    pids = [int(line) for line in starts.read_text().split()]
    assert len(pids) == 1, f"{len(pids)} servers launched for 2 workers"
    assert not alive(pids[0]), "the server outlived the run"


def test_distinct_configurations_launch_once_each(pytester, fake_command, monkeypatch, tmp_path):
    starts = tmp_path / "starts"
    monkeypatch.setenv("FAKE_VLLM_STARTS", str(starts))
    pytester.makepyfile("""
        def test_keyed(vllm):
            a = vllm.launch(api_key="k1")
            b = vllm.launch(api_key="k1")
            c = vllm.launch(serve_args=("--x",))
            assert a.base_url == b.base_url != c.base_url
    """)
    result = pytester.runpytest_subprocess(*launch_args(fake_command))
    result.assert_outcomes(passed=1)
    assert len(starts.read_text().split()) == 2


def test_the_servers_a_run_uses_start_side_by_side_at_collection(pytester, fake_command, monkeypatch, tmp_path):
    starts = tmp_path / "starts"
    monkeypatch.setenv("FAKE_VLLM_STARTS", str(starts))
    pytester.makepyfile(f"""
        import time
        from pathlib import Path

        def test_first(vllm_server):
            deadline = time.monotonic() + 20  # the other target's server starts before any of its checks
            while len(Path({str(starts)!r}).read_text().split()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(Path({str(starts)!r}).read_text().split()) == 2

        def test_copy_on_demand(vllm):
            pass  # no server: none is started for it
    """)
    launched = ["--vllm-url", "launch", "--vllm-model", "a", "--vllm-url", "launch", "--vllm-model", "b"]
    result = pytester.runpytest_subprocess("--vllm-command", fake_command, *launched, "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    assert len(starts.read_text().split()) == 2


def test_a_run_that_ends_stops_its_start_under_way_and_no_other(fake_command, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    ended = ServerPool(SubprocessLauncher(fake_command, request_timeout=5), tmp_path / "ended", 60, owner=True)
    ended.start_early([lambda: ServerSpec("hangs")])
    time.sleep(1)
    started = time.monotonic()
    ended.close()
    assert time.monotonic() - started < 10, "a start under way is abandoned, not waited for"
    assert not list((tmp_path / "ended").glob("*.json")), "an abandoned start leaves no record"
    monkeypatch.setenv("FAKE_VLLM_MODE", "ok")
    launcher = SubprocessLauncher(fake_command, request_timeout=5)  # as a later test in this process
    server = launcher.start(ServerSpec("serves"), tmp_path, timeout=30)
    launcher.stop(server)
    assert server.model == "serves"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_leaves_no_server_behind(pytester, fake_command, monkeypatch, tmp_path, stop):
    starts = tmp_path / "starts"
    monkeypatch.setenv("FAKE_VLLM_STARTS", str(starts))
    pytester.makepyfile("""
        import time

        def test_waits(vllm_server):
            print("READY", flush=True)
            time.sleep(60)
    """)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", *launch_args(fake_command)],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        text=True,
        # as from a terminal: an xdist worker ignores SIGINT, and Python keeps an inherited SIG_IGN
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in process.stdout:
        if "READY" in line:
            break
    process.send_signal(stop)
    output = process.communicate(timeout=180)[0]  # a loaded 2-core CI machine stops servers slowly
    assert "KeyboardInterrupt" in output
    pid = int(starts.read_text().split()[0])
    assert not alive(pid), f"{stop.name} left the server running"


def test_reset_connection_is_retried_once_and_recorded(pytester, fake_server):
    pytester.makepyfile("""
        def test_reset_once(vllm_http):
            assert vllm_http.get("/v1/models").status_code == 200
            assert vllm_http.get("/v1/reset-once").json() == {"reset": 1}

        def test_reset_always(vllm_http):
            vllm_http.get("/v1/reset-always")

        def test_after(vllm_http):
            assert vllm_http.get("/v1/models").status_code == 200
    """)
    result, checks = _run_with_the_key(pytester, fake_server)
    result.assert_outcomes(passed=2, failed=1)
    assert checks["test_reset_always"]["reason"].startswith(
        "connection reset by the server: GET /v1/reset-always got no answer"
    ), checks["test_reset_always"]
    assert "Traceback" not in checks["test_reset_always"]["reason"]
    assert checks["test_reset_always"]["fingerprint"] == (
        "no complete answer to GET /v1/reset-always (connection broken or timed out)"
    )
    [finding] = checks["test_reset_once"]["findings"]
    assert finding["request"] == "GET /v1/reset-once" and finding["after"].startswith("GET /v1/models")
    result.stdout.fnmatch_lines(
        [
            "finding: *::test_reset_once: connection reset by the server, answered on "
            "a fresh connection: GET /v1/reset-once*the request before it: GET /v1/models*"
        ]
    )


def test_remote_server_gone_mid_run_is_one_reason_and_no_collateral(pytester, fake_server):
    pytester.makepyfile("""
        def test_1_ok(vllm_http):
            assert vllm_http.get("/v1/models").status_code == 200

        def test_2_server_exits(vllm_http):
            vllm_http.get("/v1/exit")

        def test_3_later(vllm_http):
            assert vllm_http.get("/v1/models").status_code == 200

        def test_4_later(vllm_http):
            assert vllm_http.get("/v1/models").status_code == 200
    """)
    result, checks = _run_with_the_key(pytester, fake_server, "--vllm-request-timeout", "5")
    result.assert_outcomes(passed=1, failed=1)
    assert checks["test_2_server_exits"]["reason"] == (
        "the server served-a stopped answering during the run (connection refused)"
    )
    assert set(checks) == {"test_1_ok", "test_2_server_exits"}, "later checks are not run at all"
    result.stdout.fnmatch_lines(["*Interrupted: the server served-a stopped answering during the run*"])


def test_remote_server_wedged_mid_run_is_found_within_seconds(pytester, fake_server):
    """A wedged engine still lists its models: after a request timed out, a one-token generation decides."""
    pytester.makepyfile("""
        def test_1_wedges_it(vllm_http):
            vllm_http.get("/v1/wedge")

        def test_2_later(vllm_http):
            assert vllm_http.get("/v1/models").status_code == 200
    """)
    args = ("--vllm-request-timeout", "2", "--vllm-capability", "completions=yes")
    started = time.monotonic()
    _, checks = _run_with_the_key(pytester, fake_server, *args)
    assert checks["test_1_wedges_it"]["reason"] == (
        "the server served-a stopped answering during the run (a one-token generation got no answer within 2 s: "
        "its engine is wedged)"
    )
    assert set(checks) == {"test_1_wedges_it"} and time.monotonic() - started < 30, "the run stops at once"


def test_a_server_that_keeps_dying_is_relaunched_at_most_ten_times(pytester, fake_command, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "die")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_1_kills_it(vllm_http, n):
            vllm_http.get("/v1/die")

        def test_2_later(vllm_server):
            pass
    """)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(*launch_args(fake_command), "--vllm-report", str(report))
    result.assert_outcomes(failed=6)  # and the run stops there
    last = json.loads(report.read_text())["checks"][5]["reason"]
    assert last.endswith("; relaunching it failed: it died 11 times in this run: it is not launched again"), last


@pytest.mark.parametrize(
    ("path", "how"),
    [
        ("/v1/wedge", "a one-token generation got no answer within 2 s: its engine is wedged"),
        ("/v1/break", "a one-token generation answered 500: its engine is broken"),
    ],
    ids=["wedged", "broken"],
)
def test_a_check_that_wedges_or_breaks_a_launched_engine_fails_and_the_run_goes_on(pytester, fake_command, path, how):
    """An engine that wedges (vLLM 0.12 in structured outputs) or dies behind its live API server, answering 500
    (vLLM 0.32 after prompt_logprobs with n > 1), is stopped and relaunched like a dead server."""
    pytester.makepyfile(f"""
        def test_1_breaks_it(vllm_http):
            assert vllm_http.get("{path}").status_code == 200

        def test_2_later(vllm_http):
            assert vllm_http.get("/v1/models").status_code == 200
    """)
    report = pytester.path / "report.json"
    args = ("--vllm-request-timeout", "2", "--vllm-capability", "completions=yes", "--vllm-report", str(report))
    pytester.runpytest_subprocess(*launch_args(fake_command, *args)).assert_outcomes(failed=1, passed=1)
    [broken] = [c for c in json.loads(report.read_text())["checks"] if c["outcome"] == "failed"]
    assert broken["reason"] == (
        f"the server fake-model stopped answering during the run ({how}); "
        "and again when this check ran alone on a relaunched server"
    )


def test_a_check_that_meets_a_neighbours_kill_is_judged_again_alone(pytester, fake_command, monkeypatch):
    """Under xdist, test_b's request is under way when test_a's kills the server: test_b runs again alone on the
    relaunched server and passes; test_a kills that one too and is the one red check. No check is left unjudged."""
    monkeypatch.setenv("FAKE_VLLM_MODE", "die")
    pytester.makepyfile(
        test_a="import time\n\ndef test_kills_it(vllm_http):\n    time.sleep(1)\n    vllm_http.get('/v1/die')\n",
        test_b="def test_slow(vllm_http):\n    assert vllm_http.get('/v1/slow').status_code == 200\n",
        **{
            f"test_{i}": "import time\n\ndef test_later(vllm_http):\n    time.sleep(2)\n    "
            "assert vllm_http.get('/v1/models').status_code == 200\n"
            for i in "cdef"
        },
    )
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        *launch_args(fake_command, "--vllm-request-timeout", "5"), "-n", "2", "--vllm-report", str(report)
    )
    checks = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
    red = [id for id, c in checks.items() if c["outcome"] != "passed"]
    assert red == ["test_a.py::test_kills_it"], red
    assert checks["test_a.py::test_kills_it"]["outcome"] == "failed"
    assert len(checks) == 6 and result.ret == 1


def test_own_errors_are_errors_and_server_faults_are_failures(pytester, fake_server):
    pytester.makepyfile(helper="def check(value):\n    assert value, 'a helper asserted'\n")
    pytester.makepyfile(
        test_checks="""
        import pytest
        from helper import check
        from pytest_vllm.verdicts import fingerprint

        def test_server_wrong(vllm_http):
            status = vllm_http.get("/v1/nothing").status_code
            fingerprint(f"status {status}")
            assert status == 200, f"expected 200, got {status}"

        def test_key_error_of_ours(vllm_http):
            {}["missing"]

        def test_assertion_outside_the_check(vllm_http):
            check(False)

        def test_sdk_status(vllm_openai):
            vllm_openai.completions.create(model="served-a", prompt="x")
    """
    )
    result, checks = _run_with_the_key(pytester, fake_server, "-p", "no:randomly")
    result.assert_outcomes(failed=2, errors=2)
    assert checks["test_server_wrong"]["outcome"] == "failed"
    assert checks["test_server_wrong"]["reason"] == "expected 200, got 404"
    assert checks["test_server_wrong"]["fingerprint"] == "status 404"
    assert checks["test_sdk_status"]["outcome"] == "failed"
    assert checks["test_sdk_status"]["reason"].startswith("the server answered 501 to POST /v1/completions")
    for name in ("test_key_error_of_ours", "test_assertion_outside_the_check"):
        assert checks[name]["outcome"] == "error", checks[name]
        assert checks[name]["reason"].startswith("pytest-vllm's own error"), checks[name]
    assert "KeyError: 'missing' (raised at test_checks.py:" in checks["test_key_error_of_ours"]["reason"]


def test_busy_answers_are_asked_again_and_never_pass_for_a_rejection(pytester, fake_server):
    pytester.makepyfile("""
        def test_busy_once(vllm_http):
            response = vllm_http.get("/v1/busy-once")
            assert response.status_code == 200 and response.json() == {"busy": 1}

        def test_busy_always(vllm_http):
            assert vllm_http.get("/v1/busy-always").status_code < 500  # a 503 must not reach the check
    """)
    result, checks = _run_with_the_key(pytester, fake_server, "--vllm-request-timeout", "3")
    result.assert_outcomes(passed=1, failed=1)
    assert checks["test_busy_always"]["reason"].startswith(
        "the server answered 503 (no capacity) to GET /v1/busy-always, and again when asked after its Retry-After"
    )
    assert checks["test_busy_always"]["fingerprint"] == (
        "busy (429 or 503) past the request timeout: GET /v1/busy-always"
    )  # how long it waited varies


def test_missing_fields_probe_errors_and_vllm_only_capabilities(pytester, fake_server):
    pytester.makepyfile(
        test_checks="""
        import pytest

        def test_missing_field(vllm_http):
            vllm_http.get("/v1/models").json()["usage"]

        @pytest.mark.vllm_requires("chat")
        def test_needs_chat(vllm_server):
            pass

        @pytest.mark.vllm_requires("tokenize")
        def test_needs_tokenize(vllm_server):
            pass
    """
    )
    _, checks = _run_with_the_key(pytester, fake_server, "--vllm-capability", "vllm=no")
    assert checks["test_missing_field"]["outcome"] == "failed", checks["test_missing_field"]
    assert checks["test_missing_field"]["reason"].startswith("the server's answer has no 'usage' field")
    assert (
        checks["test_missing_field"]["curl"] == f"curl -sS -X GET {fake_server}/v1/models "
        '-H "Authorization: Bearer $VLLM_API_KEY"'
    ), checks["test_missing_field"]["curl"]  # the key never written
    # POST answers 501 here: neither present nor absent, so the server's fault, not ours.
    assert checks["test_needs_chat"]["outcome"] == "failed", checks["test_needs_chat"]
    assert checks["test_needs_chat"]["reason"].startswith("probing a capability the check needs: POST /v1/chat")
    assert checks["test_needs_tokenize"]["outcome"] == "unsupported"
    assert "lacks 'tokenize'" in checks["test_needs_tokenize"]["reason"]
    assert "the server is not vLLM" in checks["test_needs_tokenize"]["reason"]
    _, checks = _run_with_the_key(pytester, fake_server, "-k", "tokenize")  # the fake says it is vLLM:
    assert checks["test_needs_tokenize"]["outcome"] == "passed", checks  # vLLM's own routes are taken as there


def _run_with_the_key(pytester, url, *args):
    """The pytester run against `url` with the fake server's key: its result and records by test name."""
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        "--vllm-url", url, "--vllm-api-key", "sekrit-key-123", "--vllm-report", str(report), *args
    )
    return result, {c["id"].split("::")[1]: c for c in json.loads(report.read_text())["checks"]}


SCHEMA_CHECK = "suites/test_models.py::test_models_list_matches_openai_schema"  # fails on the fake: no `created`


@pytest.mark.parametrize("args", [[], ["--tb=long"], ["-v"]], ids=["default", "tb-long", "verbose"])
def test_the_runner_leads_with_the_verdict_and_tracebacks_are_asked_for(fake_server, tmp_path, args):
    report = tmp_path / "report.json"
    server = ["--vllm-url", fake_server, "--vllm-api-key", "sekrit-key-123", "--vllm-report", str(report)]
    done = run_suites(*server, "-k", "test_models_list_matches_openai_schema", *args, cwd=tmp_path, timeout=120)
    output = done.stdout
    assert f"failed: {SCHEMA_CHECK}: response does not match OpenAI's ListModelsResponse" in output, output
    assert f'  repeat: curl -sS -X GET {fake_server}/v1/models -H "Authorization: Bearer $VLLM_API_KEY"' in output
    assert "short test summary info" not in output, "each failure is listed once, with its reason"
    shown = ("FAILURES" in output, "- vllm requests -" in output)
    assert shown == ((True, True) if args else (False, False)), output
    assert ("each failure's traceback, requests and server log: in the results file" in output) == (not args)
    [check] = load_results(report, output)["checks"]
    assert "def test_models_list_matches_openai_schema" in check["details"]  # the results file has them all
    assert f"--- vllm requests ---\n> GET {fake_server}/v1/models" in check["details"]


def test_progress_lines_start_lines_of_their_own(pytester, fake_command):
    pytester.makepyfile("def test_first():\n    pass\n" + USES_SERVER)
    result = pytester.runpytest_subprocess(*launch_args(fake_command))
    result.assert_outcomes(passed=2)
    lines = result.stdout.lines
    assert "vllm: starting vLLM for fake-model" in lines, lines  # not glued onto the line of progress dots
    assert any(line.startswith("vllm: starting vLLM for fake-model: ready in ") for line in lines), lines
