"""The results: one record per check, a per-area summary table, and the JSON results file.

Runs where reports arrive whole: in pytest itself, or in the xdist controller.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_vllm.session import VllmSession

OUTCOMES = ("passed", "failed", "unsupported", "skipped", "error")
_RANK = {"passed": 0, "skipped": 1, "unsupported": 2, "failed": 3, "error": 4}
_MESSAGE_LIMIT = 2000


@dataclass
class Record:
    nodeid: str
    area: str
    outcome: str
    message: str
    duration: float
    started: float
    request_seconds: float = 0.0
    properties: dict = field(default_factory=dict)


def area_of(nodeid: str) -> str:
    """The feature area: the module name without `test_` (`suites/test_chat.py` → `chat`)."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return module.removesuffix(".py").removeprefix("test_")


def outcome_of(report: pytest.TestReport) -> str:
    if getattr(report, "vllm_unsupported", False):
        return "unsupported"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    return report.outcome


class ReportPlugin:
    """Controller-side hooks: collect a record per check, print the table, write the file."""

    def __init__(self, vllm: VllmSession) -> None:
        self.vllm = vllm
        self.records: dict[str, Record] = {}
        self.started = time.time()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = outcome_of(report)
        record = self.records.get(report.nodeid)
        if record is None:
            record = self.records[report.nodeid] = Record(
                report.nodeid, area_of(report.nodeid), outcome, "", 0.0, report.start
            )
        record.duration += report.duration
        record.request_seconds += getattr(report, "vllm_request_seconds", 0.0)
        record.properties.update((str(k), v) for k, v in report.user_properties)
        if _RANK[outcome] > _RANK[record.outcome] or (outcome != "passed" and not record.message):
            record.outcome = max(record.outcome, outcome, key=_RANK.__getitem__)
            record.message = _message(report)

    def counts(self) -> dict[str, Counter]:
        table: dict[str, Counter] = {}
        for record in self.records.values():
            table.setdefault(record.area, Counter())[record.outcome] += 1
        return table

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return
        settings = self.vllm.settings
        servers = self.vllm.servers_seen()
        if not (servers or settings.report or settings.url):
            return
        write = terminalreporter.write_line
        terminalreporter.section("vllm conformance")
        for server in servers:
            write(server_line(server))
        for line in table_lines(self.counts()):
            write(line)
        reasons = Counter(r.message for r in self.records.values() if r.outcome == "unsupported")
        for reason, count in sorted(reasons.items()):
            write(f"{count} {reason}")
        if settings.report:
            path = Path(settings.report)
            self.write(path, servers)
            write(f"results: {path.resolve()}")

    def write(self, path: Path, servers: list[dict]) -> None:
        data = {
            "started": self.started,
            "duration": time.time() - self.started,
            "servers": servers,
            "settings": self.vllm.settings.describe(),
            "counts": {area: dict(c) for area, c in sorted(self.counts().items())},
            "checks": [asdict(r) for r in self.records.values()],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")


def server_line(server: dict) -> str:
    """One line on a server of the results: where, what, which vLLM, how it came to be."""
    if "error" in server:
        return f"server: {server['url']}: not available"
    ready = f", ready in {server['startup_seconds']} s" if server.get("startup_seconds") else ""
    return (f"server: {server['model']} at {server['url']} "
            f"(vLLM {server['version']}, {server['launched_by']}{ready})")


def table_lines(counts: dict[str, Counter]) -> list[str]:
    """The per-area table of outcomes, one line per feature area."""
    width = max([len("area")] + [len(area) for area in counts])
    lines = ["area".ljust(width) + "".join(f"{o:>13}" for o in OUTCOMES)]
    for area in sorted(counts):
        lines.append(area.ljust(width) + "".join(f"{counts[area].get(o, 0):>13}" for o in OUTCOMES))
    return lines


def main(argv: list[str] | None = None) -> None:
    """`python -m pytest_vllm.report FILE...`: the servers and the per-area table of results files."""
    for path in argv if argv is not None else sys.argv[1:]:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"cannot read the results file {path}: {error}") from None
        print(f"{path}:")
        for server in data["servers"]:
            print(server_line(server))
        for line in table_lines({area: Counter(c) for area, c in data["counts"].items()}):
            print(line)


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        text = report.longrepr[2]
    else:
        text = report.longreprtext
    text = text.removeprefix("Skipped: ")
    return text if len(text) <= _MESSAGE_LIMIT else text[-_MESSAGE_LIMIT:]


if __name__ == "__main__":
    main()
