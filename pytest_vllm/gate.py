"""The baseline gate: this run's verdicts against an earlier results file, check by check.

`--vllm-baseline PATH` compares the run with a results file (or a curated deviations file in
the same format) by stable check id and fingerprint. A *regression* is a check that passed
before and does not now, or that failed before and fails differently now (another outcome or
fingerprint), or a feature that was there and is gone. *Fixed* checks pass where they failed,
*known* ones fail as before, *new* checks were not in the baseline, *missing* ones are not in
this run. A check one side did not judge because its run stopped (a server that died: "not run")
is *not run*, never new nor unchanged, and so is a check a stopped baseline has no record of: a
gate over an incomplete run says INCOMPLETE and fails, so a truncated run cannot look clean. The
gate passes when nothing regressed, nothing is missing and both runs are complete. In a run of several targets
a check is compared target by target: its key is its id with the target leading its parameters (`key`).

`python -m pytest_vllm.gate BASELINE RESULTS` gates a saved results file the same way.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

_RED = ("failed", "error")


@dataclass
class Comparison:
    regressions: list[tuple[str, str]] = field(default_factory=list)  # (check, how)
    fixed: list[tuple[str, str]] = field(default_factory=list)
    known: list[tuple[str, str]] = field(default_factory=list)
    new: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    not_run: list[tuple[str, str]] = field(default_factory=list)  # (check, which side did not judge it)
    unchanged: int = 0

    @property
    def ok(self) -> bool:
        return not self.regressions and not self.missing and not self.not_run

    def lines(self, baseline: str) -> list[str]:
        """The gate's summary: a count line, then every check that is not plainly unchanged."""
        verdict = "INCOMPLETE" if self.not_run else "PASS" if self.ok else "FAIL"
        lines = [
            f"baseline {baseline}: {verdict}: {len(self.regressions)} regressions, {len(self.fixed)} fixed, "
            f"{len(self.known)} known, {len(self.new)} new, {len(self.missing)} missing, "
            f"{len(self.not_run)} not run, {self.unchanged} unchanged"
        ]
        lines += [f"regression: {check}: {how}" for check, how in self.regressions]
        lines += [f"missing: {check}: in the baseline, not in this run" for check in self.missing]
        lines += [f"not run: {check}: {side}" for check, side in self.not_run]
        lines += [f"fixed: {check}: {how}" for check, how in self.fixed]
        lines += [f"new: {check}: {outcome}" for check, outcome in self.new]
        lines += [f"known: {check}: {fingerprint}" for check, fingerprint in self.known]
        return lines


def with_target(check: str, target: str) -> str:
    """Check `check`'s id on `target` as pytest names it in a run of several targets: `test_x[TARGET-a]`."""
    if not target:
        return check
    head, sep, params = check.partition("[")
    return f"{head}[{target}-{params}" if sep else f"{check}[{target}]"


def key(record: dict) -> str:
    """What the gate keys a record on: its check id, and its target in a run of several."""
    return with_target(record["id"], record.get("target", ""))


def load(path: str | Path) -> dict[str, dict]:
    """The records of a results file by check (and target); a clear error if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
        return {key(record): record for record in data["checks"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a pytest-vllm results file ({type(error).__name__}: {error})") from None


def not_run(record: dict) -> bool:
    """Whether the run that wrote `record` did not judge the check: it stopped first."""
    return record["outcome"] == "skipped" and record.get("reason", "").startswith("not run")


def compare(baseline: dict[str, dict], current: dict[str, dict]) -> Comparison:
    result = Comparison()
    stopped_baseline = any(not_run(record) for record in baseline.values())
    for check in sorted(baseline.keys() | current.keys()):
        before, now = baseline.get(check), current.get(check)
        if now is None:
            result.missing.append(check)
        elif not_run(now):
            result.not_run.append((check, f"this run stopped before it: {now['reason']}"))
        elif before is not None and not_run(before):
            result.not_run.append((check, f"the baseline's run stopped before it: {before['reason']}"))
        elif before is None and stopped_baseline:
            result.not_run.append((check, "the baseline's run stopped, and has no record of it"))
        elif before is None:
            result.new.append((check, _describe(now)))
        else:
            _judge(result, check, before, now)
    return result


def _judge(result: Comparison, check: str, before: dict, now: dict) -> None:
    was, is_ = before["outcome"], now["outcome"]
    change = f"{was} → {_describe(now)}"
    if is_ == "passed":
        if was == "passed":
            result.unchanged += 1
        else:
            result.fixed.append((check, f"{was} → passed"))
    elif is_ in _RED:
        if was == is_ and "fingerprint" not in before:
            result.known.append((check, f"{now.get('fingerprint')} (the baseline recorded no fingerprint)"))
        elif was == is_ and before["fingerprint"] == now.get("fingerprint"):
            result.known.append((check, now["fingerprint"]))
        elif was in _RED:
            result.regressions.append(
                (check, f"{was} differently: was «{before.get('fingerprint')}», now «{now.get('fingerprint')}»")
            )
        else:
            result.regressions.append((check, change))
    elif was in ("passed", *_RED) or (was == "unsupported" and is_ == "skipped"):
        result.regressions.append((check, change))  # it was there, and is gone
    else:
        result.unchanged += 1


def _describe(record: dict) -> str:
    reason = record.get("reason", "")
    return f"{record['outcome']}: {reason}" if reason and record["outcome"] != "passed" else record["outcome"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m pytest_vllm.gate BASELINE RESULTS", file=sys.stderr)
        return 2
    try:
        comparison = compare(load(args[0]), load(args[1]))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    print("\n".join(comparison.lines(args[0])))
    return 0 if comparison.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
