"""The runs of the shipped suites that tests/test_faults.py checks: real vLLM servers behind the fault proxy.

Four real vLLM servers (the embedded default's fixture models: tiny-chat launched with an API
key, LoRA adapters and hermes tools; tiny-vision; minilm-embed; minilm-rerank) stand behind
pytest_vllm/proxy.py. The suites run as a user runs them, in a subprocess against the proxy's URL:
a fault's run collects only its module (`python -m pytest <installed suites>/test_<module>.py
--vllm-url ... -k ...`, 2.5 s a run cheaper than collecting all 335 checks), the no-fault run of
each server is `python -m pytest_vllm --vllm-url ... -k <every targeted check>`. Each fault listens
on a port of its own, so runs overlap (`PYTEST_VLLM_FAULT_JOBS`, default 2); a server's runs start
as soon as it is ready. `PYTEST_VLLM_FAULT_SERVERS=servers.json` points the runs at servers
already running instead of launching them (for development).

The fixtures `upstreams`, `proxies` and `runs` serve the test module that imports them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import load_results, run_suites

from pytest_vllm import faults
from pytest_vllm.prove import adapters
from pytest_vllm.proxy import FaultProxy

# Set to a JSON file {"tiny-chat": {"url": ..., "api_key": ...}, ...} to test servers already running
# (development: keeps the servers up between runs). Unset: this module launches them.
SERVERS_FILE = os.environ.get("PYTEST_VLLM_FAULT_SERVERS")  # read now: conftest clears PYTEST_VLLM_* per test
CHAT, VISION, EMBED, RERANK = "tiny-chat", "tiny-vision", "minilm-embed", "minilm-rerank"
SERVERS = (CHAT, VISION, EMBED, RERANK)
API_KEY = "pytest-vllm-faults-key"
RUN_TIMEOUT = 300
JOBS = int(os.environ.get("PYTEST_VLLM_FAULT_JOBS", "2"))  # runs at a time


class Upstreams:
    """The real servers: each launched (in a thread of its own) when first asked for, stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: dict[str, dict] = {}
        self.errors: dict[str, BaseException] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._launched = []
        self._launcher = None
        self._lock = threading.Lock()

    def get(self, name: str) -> dict:
        """`{"url", "api_key", "model", "adapters"}` of the server for `name`, once it is ready."""
        with self._lock:
            if name not in self._threads and name not in self.servers:
                self._start(name)
        if name in self._threads:
            self._threads[name].join()
        if name in self.errors:
            pytest.fail(f"the {name} server could not be had: {self.errors[name]}", pytrace=False)
        return self.servers[name]

    def _start(self, name: str) -> None:
        if SERVERS_FILE:
            server = json.loads(Path(SERVERS_FILE).read_text())[name]
            self.servers[name] = {"model": name, **server, "adapters": adapters(server["url"], server.get("api_key"))}
            return
        if self._launcher is None:
            from pytest_vllm.launchers import SubprocessLauncher

            self._launcher = SubprocessLauncher(None, request_timeout=120)
        self._threads[name] = threading.Thread(target=self._launch, args=(name,), daemon=True)
        self._threads[name].start()

    def _launch(self, name: str) -> None:
        from pytest_vllm import fixture_models
        from pytest_vllm.launchers import ServerSpec
        from pytest_vllm.session import EMBEDDED_ENV

        try:
            path = fixture_models.build(name)
            key = API_KEY if name == CHAT else None
            args = tuple(fixture_models.serve_args(name, path))
            spec = ServerSpec(str(path), name, args, EMBEDDED_ENV, api_key=key)
            server = self._launcher.start(spec, self.workdir, timeout=900)
            self._launched.append(server)
            self.servers[name] = {
                "url": server.base_url,
                "api_key": key,
                "model": name,
                "adapters": adapters(server.base_url, key),
            }
        except BaseException as error:  # noqa: BLE001 - reported by get() in the test that needs it
            self.errors[name] = error

    def stop(self) -> None:
        for thread in self._threads.values():
            thread.join()
        for server in self._launched:
            self._launcher.stop(server)


@pytest.fixture(scope="module")
def upstreams(real_vllm_turn, tmp_path_factory):
    ups = Upstreams(tmp_path_factory.mktemp("fault-servers"))
    yield ups
    ups.stop()


@pytest.fixture(scope="module")
def proxies(upstreams):
    """`proxies(name)`: the FaultProxy in front of server `name` (and that server's description)."""
    made: dict[str, FaultProxy] = {}
    lock = threading.Lock()

    def get(name):
        server = upstreams.get(name)
        with lock:
            if name not in made:
                made[name] = FaultProxy(server["url"])
        return made[name], server

    yield get
    for proxy in made.values():
        proxy.close()


@dataclass
class Run:
    checks: dict[str, dict]
    output: str
    seconds: float


def run_against(url: str, server: dict, keyword: str, folder: Path, module: str | None = None) -> Run:
    """The shipped suites (all, or suite `module`) against `url`, selecting `keyword`: the records by check id."""
    started = time.monotonic()
    report = folder / "report.json"
    env = dict(os.environ)
    if server.get("api_key"):
        env["PYTEST_VLLM_API_KEY"] = server["api_key"]  # not on the command line
    args = ["--vllm-url", url, "--vllm-model", server["model"], "-k", keyword, "--vllm-report", str(report)]
    args += ["-p", "no:randomly", "--hypothesis-seed=0", "--vllm-perf", "--vllm-parity"]  # opt-ins: -k selects
    done = run_suites(*args, cwd=folder, timeout=RUN_TIMEOUT, env=env, module=module)
    output = done.stdout[-4000:] + done.stderr[-2000:]
    checks = load_results(report, output)["checks"]
    return Run({check["id"]: check for check in checks}, output, time.monotonic() - started)


class Runs:
    """The runs the selected tests of a module wait for, on a pool of `JOBS` threads (each run is a
    subprocess, mostly waiting on a server): a test's parameter `c` (a case of `cases`) asks for that
    fault's run, its parameter `name` (a server) for that server's run without a fault. A server's
    runs are queued, in collection order, once it is ready, so a server still starting holds up no
    other's; a test waits for its own run."""

    def __init__(self, proxies, folder: Path, items: list[pytest.Item], cases: list) -> None:
        self.proxies, self.folder, self.cases = proxies, folder, cases
        self.pool = ThreadPoolExecutor(JOBS, thread_name_prefix="fault-run")
        self.futures: dict[str, Future] = {}
        queued: dict[str, list] = {}
        for item in items:
            params = getattr(item, "callspec", None)
            if params is not None and "c" in params.params:
                case = params.params["c"]
                queued.setdefault(case.server, []).append((case.id, self._fault_run(case)))
            elif params is not None and "name" in params.params:
                name = params.params["name"]
                queued.setdefault(name, []).append((f"no-fault-{name}", self._clean_run(name)))
        for server, jobs in queued.items():  # the servers start together, each when its queue asks
            for key, _ in jobs:
                self.futures[key] = Future()
            threading.Thread(target=self._queue, args=(server, jobs), daemon=True).start()

    def _queue(self, server: str, jobs: list) -> None:
        try:
            self.proxies(server)  # waits until the server is ready
        except BaseException as error:  # noqa: BLE001 - each of its tests reports it
            for key, _ in jobs:
                self.futures[key].set_exception(error)
            return
        for key, job in jobs:
            try:
                self.pool.submit(self._settle, self.futures[key], job)
            except RuntimeError:  # the module ended (e.g. -x) while this server was starting
                return

    @staticmethod
    def _settle(future: Future, job) -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(job())
            except BaseException as error:  # noqa: BLE001 - raised again in the test that waits
                future.set_exception(error)

    def _fault_run(self, case):
        def run():
            proxy, server = self.proxies(case.server)
            fault = faults.make(case.fault, faults.Setup(server["model"], server.get("api_key"), server["adapters"]))
            return run_against(proxy.url(fault), server, case.select, self._folder(case.id), case.module)

        return run

    def _clean_run(self, name: str):
        def run():
            proxy, server = self.proxies(name)
            keyword = " or ".join(f"({case.keyword})" for case in self.cases if case.server == name)
            return run_against(proxy.url(None), server, keyword, self._folder(f"no-fault-{name}"))

        return run

    def _folder(self, name: str) -> Path:
        folder = self.folder / "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        folder.mkdir()
        return folder

    def result(self, key: str) -> Run:
        return self.futures[key].result()

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()  # those not started yet
        self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def runs(request, proxies, tmp_path_factory):
    """The `Runs` of the module's selected tests, for the module's table `CASES`."""
    items = [item for item in request.session.items if item.module is request.module]
    all_runs = Runs(proxies, tmp_path_factory.mktemp("fault-runs"), items, request.module.CASES)
    yield all_runs
    all_runs.close()
