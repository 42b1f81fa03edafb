"""`--vllm-prove`: each passed check run again through the faults that should break it.

For each fault of targets.py whose checks passed, a fault proxy (proxy.py) stands in front of the
server they ran against, and one run of the shipped suites, in a subprocess, runs exactly those checks
(by node id) against the fault's URL; a fault's checks on another server (or another target of a run of
several) get a run of their own. Two runs go at a time. A passed check is then
- `proved`: a fault made it fail;
- `unproved`: no fault made it fail, and it passed under at least one (it cannot tell that bug);
- `inconclusive`: no fault's run judged it (unsupported, error or skipped there, or the run died);
- `untargeted`: no fault targets it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vllm import targets
from pytest_vllm.gate import with_target
from pytest_vllm.report import PROOFS, Record

if TYPE_CHECKING:
    from pytest_vllm.launchers import VllmServer
    from pytest_vllm.proxy import FaultProxy
    from pytest_vllm.settings import Settings

JOBS = 2  # fault runs at a time
_TAIL = 1500  # characters of a broken run's output in the reason


@dataclass(frozen=True)
class Run:
    """One fault's run: `checks` (ids) against `server`; `seconds`, what they took in the run proved; `target`,
    whose checks they are in a run of several."""

    fault: str
    server: VllmServer
    checks: tuple[str, ...]
    seconds: float
    target: str = ""


Outcomes = dict[str, tuple[str, str]]  # check id -> (outcome, reason) in one fault's run


def prove(
    records: Iterable[Record],
    server_at: Callable[[str, str], VllmServer | None],
    execute: Callable[[Run], Outcomes],
    write: Callable[[str], object],
) -> dict:
    """Set `proof` and `proof_reason` of each passed record, running each fault's checks with `execute`
    (a `Runner`); `server_at(base_url, target)` is the server a check ran against. The count of each proof."""
    started = time.monotonic()
    passed = [record for record in records if record.outcome == "passed"]
    runs, seen = plan(passed, server_at)
    lock = threading.Lock()

    def attempt(run: Run) -> Outcomes:
        with lock:
            count = f"{len(run.checks)} check{'s' if len(run.checks) > 1 else ''}"
            write(f"proving: fault {run.fault} ({count} on {run.server.model}) ...")
        began = time.monotonic()
        try:
            outcomes = execute(run)
        except Exception as error:  # noqa: BLE001 - a broken fault run leaves its checks inconclusive, not the run
            outcomes = dict.fromkeys(run.checks, ("inconclusive", f"the fault's run broke: {error!r}"))
        failed = sum(outcome == "failed" for outcome, _ in outcomes.values())
        with lock:
            write(f"proving: fault {run.fault}: {failed} of {len(run.checks)} fail ({time.monotonic() - began:.0f} s)")
        return outcomes

    pool = ThreadPoolExecutor(JOBS, thread_name_prefix="pytest-vllm-prove")
    try:
        for run, outcomes in zip(runs, pool.map(attempt, runs), strict=True):
            for check in run.checks:
                seen[with_target(check, run.target)].append((run.fault, *outcomes[check]))
    finally:  # interrupted: no waiting for the runs under way (the Runner kills them)
        pool.shutdown(wait=False, cancel_futures=True)
    for record in passed:
        found = seen.get(with_target(record.id, record.target))
        record.proof, record.proof_reason = verdict(found) if found is not None else ("untargeted", "")
    summary: dict = {proof: sum(record.proof == proof for record in passed) for proof in PROOFS}
    return {**summary, "runs": len(runs), "seconds": round(time.monotonic() - started, 1)}


def plan(
    passed: list[Record], server_at: Callable[[str, str], VllmServer | None]
) -> tuple[list[Run], dict[str, list[tuple[str, str, str]]]]:
    """The runs that prove `passed`: one per fault, server and target. And for each targeted check (keyed as
    the gate keys it), the (fault, outcome, reason) seen so far: a fault whose run cannot be had is inconclusive
    already."""
    patterns: dict[str, list[str]] = {}
    for row in targets.TARGETS:
        patterns.setdefault(row.fault, []).extend(row.checks)
    servers: dict[tuple[str, str], VllmServer | None] = {}
    runs: list[Run] = []
    seen: dict[str, list[tuple[str, str, str]]] = {}
    for fault, checks in patterns.items():
        by_server: dict[tuple[str, str], list[Record]] = {}
        for record in passed:
            if any(targets.matches(record.id, pattern) for pattern in checks):
                by_server.setdefault((record.server, record.target), []).append(record)
                seen.setdefault(with_target(record.id, record.target), [])
        for (url, target), records in by_server.items():
            if (url, target) not in servers:
                servers[url, target] = server_at(url, target) if url else None
            server = servers[url, target]
            if server is None:
                for record in records:
                    why = (fault, "inconclusive", "the server it ran against is not known")
                    seen[with_target(record.id, target)].append(why)
            else:
                duration = sum(r.duration for r in records)
                runs.append(Run(fault, server, tuple(r.id for r in records), duration, target))
    return runs, seen


def verdict(seen: list[tuple[str, str, str]]) -> tuple[str, str]:
    """A passed check's proof and why, from the (fault, outcome, reason) of each fault that targets it."""
    failed = [(fault, reason) for fault, outcome, reason in seen if outcome == "failed"]
    if failed:
        return "proved", f"fails under fault {failed[0][0]}: {failed[0][1]}"
    passed = [fault for fault, outcome, _ in seen if outcome == "passed"]
    if passed:
        return "unproved", f"passes under fault {', '.join(passed)}, which should break it"
    return "inconclusive", "; ".join(f"under fault {fault}: {outcome}: {reason}" for fault, outcome, reason in seen)


class Runner:
    """Runs a fault's checks: a fault proxy in front of each server, a subprocess of the suites a run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = Path(tempfile.mkdtemp(prefix="pytest-vllm-prove-"))
        self._proxies: dict[str, tuple[FaultProxy, tuple[str, ...]]] = {}
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        """Kill the runs still under way (an interrupted run), then stop the proxies."""
        with self._lock:
            for process in self._running:
                process.kill()
        for proxy, _ in self._proxies.values():
            proxy.close()

    def __call__(self, run: Run) -> Outcomes:
        from pytest_vllm import faults

        proxy, adapters_of = self._proxy(run.server)
        fault = faults.make(run.fault, faults.Setup(run.server.model, run.server.api_key, adapters_of))
        folder = Path(tempfile.mkdtemp(prefix=f"{run.fault}-", dir=self.folder))
        report = folder / "report.json"
        args = ["--vllm-url", proxy.url(fault), "--vllm-model", run.server.model, "--vllm-report", str(report)]
        timeout = 120 + self.settings.request_timeout + 3 * run.seconds
        argv = [*self._argv(run.checks), *args, *self._options()]
        env = self._env(run.server.api_key)
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=folder, env=env
        )
        with self._lock:
            self._running.add(process)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return dict.fromkeys(run.checks, ("inconclusive", f"the fault's run timed out after {timeout:.0f} s"))
        finally:
            with self._lock:
                self._running.discard(process)
        try:
            found = {check["id"]: check for check in json.loads(report.read_text())["checks"]}
        except (OSError, ValueError, KeyError):
            why = f"the fault's run wrote no results (exit {process.returncode}): {output[-_TAIL:]}"
            return dict.fromkeys(run.checks, ("inconclusive", why))
        return {
            check: (found[check]["outcome"], found[check]["reason"]) if check in found else ("inconclusive", "not run")
            for check in run.checks
        }

    def _proxy(self, server: VllmServer) -> tuple[FaultProxy, tuple[str, ...]]:
        """The proxy in front of `server`, and the LoRA adapters it serves (some faults need them)."""
        from pytest_vllm.proxy import FaultProxy

        with self._lock:
            if server.base_url not in self._proxies:
                found = adapters(server.base_url, server.api_key, self.settings.request_timeout)
                self._proxies[server.base_url] = FaultProxy(server.base_url, self.settings.request_timeout), found
            return self._proxies[server.base_url]

    @staticmethod
    def _argv(checks: tuple[str, ...]) -> list[str]:
        """`python -m pytest` on the installed suites' node ids of `checks`, as `pytest-vllm` runs them."""
        from pytest_vllm.cli import suites_dir

        suites = suites_dir()
        nodes = [str(suites / check.removeprefix("suites/")) for check in checks]  # file::name[params]
        options = ["-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function"]
        return [sys.executable, "-m", "pytest", *nodes, "--rootdir", str(suites.parent), *options]

    def _options(self) -> list[str]:
        """The run's options that decide how a check judges (the target and key come separately)."""
        s = self.settings
        options = ["--vllm-request-timeout", str(s.request_timeout), "--vllm-fuzz", s.fuzz]
        options += ["--vllm-fuzz-examples", str(s.fuzz_examples)] if s.fuzz_examples else []
        options += [flag for flag, asked in (("--vllm-perf", s.perf), ("--vllm-parity", s.parity)) if asked]  # opt-ins
        return options + [f"--vllm-capability={name}={'yes' if has else 'no'}" for name, has in s.capability]

    @staticmethod
    def _env(api_key: str | None) -> dict[str, str]:
        """This environment without the run's options (a fault run has its own), the key where one is needed."""
        from pytest_vllm.settings import OPTIONS

        env = {name: value for name, value in os.environ.items() if name not in {o.env for o in OPTIONS}}
        return {**env, "PYTEST_VLLM_API_KEY": api_key} if api_key else env


def adapters(url: str, api_key: str | None, timeout: float = 30) -> tuple[str, ...]:
    """The LoRA adapters the server at `url` lists (entries of /v1/models with a parent)."""
    import httpx

    from pytest_vllm.launchers import auth_headers

    data = httpx.get(f"{url}/v1/models", headers=auth_headers(api_key), timeout=timeout).json()["data"]
    return tuple(entry["id"] for entry in data if entry.get("parent"))
