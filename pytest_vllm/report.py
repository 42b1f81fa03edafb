"""The results: one record per check, a per-area summary table, and the JSON results file.

Runs where reports arrive whole: in pytest itself, or in the xdist controller. In a run of several targets a
record is one check on one target: its `id` is the check's (as in a run of one), its `target` the target's name.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vllm import perf_report
from pytest_vllm.gate import key, with_target

if TYPE_CHECKING:
    from pytest_vllm.session import VllmSession

OUTCOMES = ("passed", "failed", "unsupported", "skipped", "error")
PROOFS = ("proved", "unproved", "inconclusive", "untargeted")  # --vllm-prove's finding on a passed check
_RANK = {"passed": 0, "skipped": 1, "unsupported": 2, "failed": 3, "error": 4}
_DETAILS_LIMIT = 20000


@dataclass
class Record:
    id: str
    nodeid: str
    area: str
    outcome: str
    reason: str
    fingerprint: str
    details: str
    duration: float
    started: float
    request_seconds: float = 0.0
    properties: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)
    curl: str = ""  # a failed check's last request, to repeat by hand
    server: str = ""  # the base URL of the server the check ran against ("" for none, or several)
    proof: str = ""  # with --vllm-prove, of a passed check: proved, unproved, inconclusive or untargeted
    proof_reason: str = ""
    target: str = ""  # in a run of several targets, the target's name

    def data(self) -> dict:
        """The record as the results file holds it (`target` only in a run of several)."""
        data = asdict(self)
        if not self.target:
            del data["target"]
        return data


@dataclass
class Note:
    """What pytest-vllm adds to one pytest report, carried as one attribute (`report.vllm`, a dict
    of plain values, so that xdist sends it to the controller with the report)."""

    id: str
    outcome: str | None = None  # where the plugin judged: "unsupported", "failed" (the server) or "error" (ours)
    reason: str = ""
    fingerprint: str = ""
    curl: str = ""  # a failed check's last request, to repeat by hand
    request_seconds: float = 0.0
    findings: list = field(default_factory=list)
    server: str = ""
    target: str = ""

    @classmethod
    def of(cls, report: pytest.TestReport) -> Note:
        return cls(**getattr(report, "vllm", {"id": report.nodeid}))

    def attach(self, report: pytest.TestReport) -> None:
        report.vllm = asdict(self)  # type: ignore[attr-defined]  # pytest reports take extra attributes


def check_id(item: pytest.Item) -> str:
    """The check's id wherever it runs: `suites/<file>::<name>` for the shipped suites (from a
    checkout, a wheel, a venv or an xdist worker alike), else the nodeid; without its target, in a run
    of several (`test_x[TARGET-a]` is check `test_x[a]` on TARGET)."""
    from pytest_vllm.cli import suites_dir

    try:
        path = "suites/" + item.path.resolve().relative_to(suites_dir().resolve()).as_posix()
        _, sep, rest = item.nodeid.partition("::")
        check = path + sep + rest
    except ValueError:
        check = item.nodeid
    target = target_of(item)
    if not target:
        return check
    head, _, params = check.partition("[")
    params = "" if params == f"{target}]" else params.removeprefix(f"{target}-")
    return f"{head}[{params}" if params else head


def target_of(item: pytest.Item) -> str:
    """The target a check runs on in a run of several (its `vllm` parameter), else ""."""
    callspec = getattr(item, "callspec", None)
    return str(callspec.params.get("vllm", "")) if callspec is not None else ""


def area_of(check: str) -> str:
    """The feature area: the module name without `test_` (`suites/test_chat.py` → `chat`)."""
    module = check.split("::", 1)[0].rsplit("/", 1)[-1]
    return module.removesuffix(".py").removeprefix("test_")


def outcome_of(report: pytest.TestReport, note: Note) -> str:
    if note.outcome == "unsupported":
        return "unsupported"
    if report.failed:
        return note.outcome or ("failed" if report.when == "call" else "error")
    return report.outcome


class ReportPlugin:
    """Controller-side hooks: collect a record per check, print the table, write the file."""

    def __init__(self, vllm: VllmSession) -> None:
        self.vllm = vllm
        self.records: dict[str, Record] = {}
        self.started = time.time()
        self.comparison: Any = None
        self.proof: dict | None = None  # with --vllm-prove: the count of each proof, and the seconds it took

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        note = Note.of(report)
        outcome = outcome_of(report, note)
        check = with_target(note.id, note.target)
        record = self.records.get(check)
        if record is None:
            record = self.records[check] = Record(
                note.id, report.nodeid, area_of(note.id), outcome, "", "", "", 0.0, report.start, target=note.target
            )
        record.duration += report.duration
        record.request_seconds += note.request_seconds
        record.findings += note.findings
        record.properties.update((str(k), v) for k, v in report.user_properties)
        record.server = note.server or record.server
        if _RANK[outcome] > _RANK[record.outcome] or (outcome != "passed" and not record.reason):
            record.outcome = max(record.outcome, outcome, key=_RANK.__getitem__)
            record.reason = note.reason or _first_line(report)
            record.fingerprint = note.fingerprint or record.reason
            record.details = _details(report)
            record.curl = note.curl

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """With a baseline, the exit status is the gate's: regressions or missing checks fail."""
        baseline = self.vllm.settings.baseline
        if baseline is None or session.exitstatus not in (0, 1, 5):
            return
        from pytest_vllm import gate

        self.comparison = gate.compare(gate.load(baseline), {key(r.data()): r.data() for r in self.records.values()})
        session.exitstatus = 0 if self.comparison.ok else 1

    def counts(self) -> dict[str, Counter]:
        return area_counts(record.data() for record in self.records.values())

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return
        settings = self.vllm.settings
        servers = self.vllm.servers_seen()
        written = settings.report or settings.report_md or settings.report_html
        if not (servers or written or not settings.launches or settings.baseline):
            return
        write = terminalreporter.write_line
        terminalreporter.section("vllm conformance")
        records = [r.data() for r in self.records.values()]
        for line in target_lines(servers, records, [t.name for t in settings.targets]):
            write(line)
        for line in reason_lines(records, repeat=True) + finding_lines(records):
            write(line)
        if self.proof is not None:
            for line in proof_lines(records, self.proof):
                write(line)
        for line in perf_report.text_lines(records):
            write(line)
        if self.comparison is not None:
            for line in self.comparison.lines(settings.baseline):
                write(line)
        if not written:
            return
        data = self.results(servers)
        if settings.report:
            path = Path(settings.report)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2) + "\n")
            write(f"results: {path.resolve()}")
        for form, wanted in (("md", settings.report_md), ("html", settings.report_html)):
            if wanted:
                from pytest_vllm import render

                path = Path(wanted)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(render.render(render.targets(data, settings.report or ""), form))
                write(f"report ({form}): {path.resolve()}")

    def _target_order(self, record: Record) -> int:
        """Where a record's target is among the run's (the records of one target stay in the order they came)."""
        names = [target.name for target in self.vllm.settings.targets]
        return names.index(record.target) if record.target in names else len(names)

    def results(self, servers: list[dict]) -> dict:
        """The results file's content: the servers, settings, per-area counts, records, proof and gate."""
        data = {
            "started": self.started,
            "duration": time.time() - self.started,
            "servers": servers,
            "settings": self.vllm.settings.describe(),
            "counts": {area: dict(c) for area, c in sorted(self.counts().items())},
            "checks": [r.data() for r in sorted(self.records.values(), key=self._target_order)],
        }
        if self.proof is not None:
            data["proof"] = self.proof
        if self.comparison is not None:
            data["gate"] = {
                "baseline": str(self.vllm.settings.baseline),
                "ok": self.comparison.ok,
                **asdict(self.comparison),
            }
        return data


def target_lines(servers: list[dict], records: list[dict], targets: list[str]) -> list[str]:
    """The servers and the per-area table; in a run of several targets, the servers and table of each target."""
    if len(targets) < 2:
        return [server_line(server) for server in servers] + table_lines(area_counts(records))
    lines = []
    for target in targets + [""] * any("target" not in r for r in records):
        lines.append(f"target {target}:" if target else "tests on no target:")
        lines += [server_line(server) for server in servers if server.get("target", "") == target]
        lines += table_lines(area_counts(r for r in records if r.get("target", "") == target))
    return lines


def server_line(server: dict) -> str:
    """One line on a server of the results: where, what it is (which vLLM), how it came to be."""
    if "error" in server:
        return f"server: {server['url']}: not available"
    ready = f", ready in {server['startup_seconds']} s" if server.get("startup_seconds") else ""
    relaunched = f", relaunched {server['relaunches']}x after it died" if server.get("relaunches") else ""
    return (
        f"server: {server['model']} at {server['url']} "
        f"({server.get('identity') or 'vLLM ' + server['version']}, {server['launched_by']}{ready}{relaunched})"
    )


def area_counts(records: Iterable[dict]) -> dict[str, Counter]:
    """Each feature area's count of each outcome (and of the passes unproved, once proving)."""
    table: dict[str, Counter] = {}
    for record in records:
        counts = table.setdefault(record["area"], Counter())
        counts[record["outcome"]] += 1
        if record.get("proof"):
            counts["unproved"] += record["proof"] == "unproved"  # a column of its own once proving
    return table


def table_lines(counts: dict[str, Counter]) -> list[str]:
    """The per-area table of outcomes, one line per feature area (and the passes unproved, once proving)."""
    width = max([len("area")] + [len(area) for area in counts])
    columns = OUTCOMES + (("unproved",) if any("unproved" in c for c in counts.values()) else ())
    lines = ["area".ljust(width) + "".join(f"{o:>13}" for o in columns)]
    for area in sorted(counts):
        lines.append(area.ljust(width) + "".join(f"{counts[area].get(o, 0):>13}" for o in columns))
    return lines


def reason_lines(records: list[dict], repeat: bool = False) -> list[str]:
    """Each failed or errored check with its reason (and, with `repeat`, its curl line under it), then each
    unsupported reason with its count."""
    lines = []
    red = (r for r in records if r["outcome"] in ("failed", "error"))
    for reason, curl in sorted((f"{r['outcome']}: {key(r)}: {r['reason']}", r.get("curl")) for r in red):
        lines += [reason, f"  repeat: {curl}"] if repeat and curl else [reason]
    unsupported = Counter(r["reason"] for r in records if r["outcome"] == "unsupported")
    return lines + [f"{count} {reason}" for reason, count in sorted(unsupported.items())]


def finding_lines(records: list[dict]) -> list[str]:
    """Findings beyond the verdicts, e.g. connections the server reset (and the request before)."""
    return [
        f"finding: {key(r)}: {f['finding']}: {f['request']} ({f['error']}); "
        f"the request before it: {f['after'] or 'none'}"
        for r in records
        for f in r.get("findings", [])
    ]


def proof_lines(records: list[dict], proof: dict) -> list[str]:
    """What --vllm-prove found: the count of each proof, then each unproved and inconclusive pass with why."""
    counts = ", ".join(f"{proof[p]} {p}" for p in PROOFS)
    lines = [f"proof of the passes: {counts} ({proof['runs']} fault runs, {proof['seconds']:.0f} s)"]
    unproved = sorted((key(r), r["proof_reason"]) for r in records if r.get("proof") == "unproved")
    if unproved:
        lines.append(f"{len(unproved)} pass{'es' if len(unproved) > 1 else ''} unproved:")
        lines += [f"unproved: {check}: {why}" for check, why in unproved]
    inconclusive = sorted((key(r), r["proof_reason"]) for r in records if r.get("proof") == "inconclusive")
    return lines + [f"inconclusive: {check}: {why}" for check, why in inconclusive]


def main(argv: list[str] | None = None) -> None:
    """`python -m pytest_vllm.report FILE...`: results files as text, Markdown or HTML."""
    from pytest_vllm import render

    parser = argparse.ArgumentParser(
        prog="python -m pytest_vllm.report",
        description="Render pytest-vllm results files. text: the servers, the per-area table, each failure's "
        "reason and curl line, and the gate's summary, file by file. md and html: one column per target (the "
        "first is the baseline): the verdict and counts, what changed against the baseline, and the checks by "
        "area with their reasons and details.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="a results file, as --vllm-report writes it")
    parser.add_argument("--format", choices=render.FORMATS, default="text", help="the report's format (default: text)")
    parser.add_argument("-o", "--output", metavar="PATH", help="write the report to PATH (default: stdout)")
    parser.add_argument(
        "--budget",
        type=int,
        default=render.PR_COMMENT,
        metavar="BYTES",
        help=f"md only: the most bytes the report may take; over it, whole sections are left out, and the "
        f"report says which (default: {render.PR_COMMENT}, a pull request comment; {render.STEP_SUMMARY} "
        "for $GITHUB_STEP_SUMMARY)",
    )
    args = parser.parse_args(argv)
    try:
        columns = render.load(args.files)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    report = render.render(columns, args.format, args.budget)
    if args.output:
        Path(args.output).write_text(report)
    else:
        print(report, end="")


def _first_line(report: pytest.TestReport) -> str:
    from pytest_vllm.verdicts import denoise

    if report.skipped and isinstance(report.longrepr, tuple):
        text = report.longrepr[2]
    else:
        crash = getattr(report.longrepr, "reprcrash", None)
        text = crash.message if crash is not None else report.longreprtext
    text = denoise(text.removeprefix("Skipped: ").strip())
    return text.splitlines()[0][:300] if text else ""


def _details(report: pytest.TestReport) -> str:
    """The traceback, then the plugin's sections (the requests sent, the servers' logs): each keeps its end."""
    sections = [(name, text) for name, text in report.sections if name.startswith("vllm ")]
    parts = [report.longreprtext] + [f"--- {name} ---\n{text}" for name, text in sections]
    return "\n".join(part if len(part) <= _DETAILS_LIMIT else part[-_DETAILS_LIMIT:] for part in parts)


if __name__ == "__main__":
    main()
