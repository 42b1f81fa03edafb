"""Compatibility reports people read: results files as text, Markdown (a pull request, a step summary) or HTML.

One model for the three: each target of each results file is a column (a file holds one target, or one per
value of its records' `target` key), named from what its servers said they are. The first column is the
baseline; what changed in each next one is the gate's comparison (`gate.compare`). Markdown keeps to a byte
budget, leaving whole sections out and saying so; HTML is one file, its CSS and JS inline, loading nothing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field, fields
from html import escape
from itertools import groupby
from pathlib import Path
from urllib.parse import urlsplit

from pytest_vllm import perf_report
from pytest_vllm.gate import Comparison, compare
from pytest_vllm.report import (
    OUTCOMES,
    area_counts,
    area_of,
    finding_lines,
    proof_lines,
    reason_lines,
    server_line,
    table_lines,
)
from pytest_vllm.verdicts import denoise

FORMATS = ("text", "md", "html")
PR_COMMENT = 65536  # GitHub's limit on a comment's body, in characters; bytes are the safe side of it
STEP_SUMMARY = 1 << 20  # $GITHUB_STEP_SUMMARY's limit
_PROVED = ("proved", "unproved")  # the proofs the counts show
_ICONS = {"passed": "✅", "failed": "❌", "unsupported": "➖", "skipped": "⏭️", "error": "💥"}
_CELL = 160  # a Markdown cell's reason, in characters
_OPEN = 30  # HTML shows a comparison's changes open up to this many rows, and folded beyond
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|])")


@dataclass
class Column:
    """One target's results: a column of the matrix."""

    name: str  # short and unique among the columns: identity, model and URL (or the file's name)
    identity: str  # what the target said it is, in full
    source: str  # the results file ("" for a run's own records)
    records: dict[str, dict]  # by check id, every field the renderers read filled in
    data: dict = field(default_factory=dict, repr=False)  # the whole file: proof, gate, about

    def counts(self) -> Counter:
        """Each outcome's count, and with --vllm-prove each proof's."""
        counts = Counter(r["outcome"] for r in self.records.values())
        counts.update(r["proof"] for r in self.records.values() if r["proof"] in _PROVED)
        return counts

    def verdict(self) -> str:
        bad = sum(r["outcome"] in ("failed", "error") for r in self.records.values())
        return f"FAIL: {bad} of {len(self.records)} checks failed" if bad else f"PASS: {len(self.records)} checks"


def load(paths: list[str]) -> list[Column]:
    """The columns of results files, in order; a ValueError says which file is not one."""
    columns = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            columns += targets(data, path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"cannot read the results file {path}: {type(error).__name__}: {error}") from None
    names = Counter(column.name for column in columns)
    for column in columns:
        if names[column.name] > 1:
            column.name += f" ({Path(column.source).name})"
    return columns


def targets(data: dict, source: str) -> list[Column]:
    """One results file's targets: its records grouped by their `target` key (one group where none has it)."""
    why = data.get("why", {})
    groups: dict[str, dict[str, dict]] = {}
    for raw in data["checks"]:
        record = _record(raw, why)
        groups.setdefault(record["target"], {})[record["id"]] = record
    columns = []
    for target, records in groups.items():
        urls = {r["server"] for r in records.values()}
        servers = [
            s
            for s in data.get("servers", [])  # named by target (a run of several), else by the URLs its checks used
            if len(groups) == 1 or (s["target"] == target if "target" in s else s.get("url") in urls)
        ]
        identity = _identity(servers, data)
        name = target or _name(servers, data, source)
        columns.append(Column(name, identity, source, records, data))
    return columns


def _record(raw: dict, why: dict) -> dict:
    """A record of any vintage of results file (or a curated expected file) with all the fields filled in."""
    check = raw.get("id") or _check_id(raw["nodeid"])
    message = raw.get("message", "")  # the details, in files written before records had a reason
    reason = raw.get("reason") or (_reason(message) if raw["outcome"] != "passed" else "")
    return {
        **raw,
        "id": check,
        "area": raw.get("area") or area_of(check),
        "reason": reason,
        "fingerprint": raw.get("fingerprint") or reason,
        "details": raw.get("details") or message,
        "curl": raw.get("curl", ""),
        "proof": raw.get("proof", ""),
        "proof_reason": raw.get("proof_reason", ""),
        "findings": raw.get("findings", []),
        "server": raw.get("server", ""),
        "target": str(raw.get("target", "")),
        "why": "" if raw["outcome"] == "passed" else why.get(check) or why.get(check.split("[", 1)[0], ""),
    }


def _check_id(nodeid: str) -> str:
    """A nodeid as a stable check id: `suites/<file>::<name>` wherever the suites were installed."""
    path, sep, rest = nodeid.partition("::")
    start = path.rfind("suites/")
    return (path[start:] if start >= 0 else path) + sep + rest


def _reason(message: str) -> str:
    """The one-line reason of a failure's text: the last exception pytest shows (its `E` lines), joined."""
    lines = message.splitlines()
    marked = [i for i, line in enumerate(lines) if line.startswith("E ")]
    if not marked:
        return denoise(lines[-1].strip())[:300] if lines else ""
    first = marked[-1]
    while first - 1 in marked:
        first -= 1
    text = " ".join(line[1:].strip() for line in lines[first : marked[-1] + 1])
    return denoise(text.removeprefix("AssertionError: "))[:300]


def _identity(servers: list[dict], data: dict) -> str:
    if servers:
        return "; ".join(dict.fromkeys(_said(server) for server in servers))
    if "endpoint" in data:
        return str(data["endpoint"])
    return f"vLLM {data['vllm_version']}" if "vllm_version" in data else ""


def _said(server: dict) -> str:
    if "error" in server:
        return "not available"
    return server.get("identity") or f"vLLM {server['version']}"


def _name(servers: list[dict], data: dict, source: str) -> str:
    """`vLLM 0.32.0 · tiny-chat · http://host:8000`, or `not vLLM · ...`; the file's name where no server is named."""
    said = [_said(s) for s in servers] or [_identity([], data) or "unknown"]
    parts = [", ".join(dict.fromkeys("not vLLM" if s.startswith("not vLLM") else s for s in said))]
    models = list(dict.fromkeys(s["model"] for s in servers if "model" in s))
    if models:
        parts.append(models[0] + (f" +{len(models) - 1}" if len(models) > 1 else ""))
    remote = [s for s in servers if s.get("launched_by", "remote") == "remote"]
    if remote:
        parts.append(", ".join(dict.fromkeys(_without_credentials(s["url"]) for s in remote)))
    else:  # launched on a port of its own, or known by its file alone
        parts.append(Path(source).stem if source else "this run")
    return " · ".join(parts)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def comparisons(columns: list[Column], chain: bool = False) -> list[tuple[str, Comparison] | None]:
    """For each column, what changed against the baseline (the first column, or with `chain` the column
    before it; for a lone column, the baseline its run was gated on), with the baseline's name."""
    if not columns:  # a release history where no release was judged
        return []
    if len(columns) == 1 and "gate" in columns[0].data:
        return [(columns[0].data["gate"]["baseline"], stored_gate(columns[0].data["gate"]))]
    baselines = columns[:-1] if chain else columns[:1] * (len(columns) - 1)
    return [None] + [
        (baseline.name, compare(baseline.records, column.records))
        for baseline, column in zip(baselines, columns[1:], strict=True)
    ]


def stored_gate(gate: dict) -> Comparison:
    """The comparison a results file holds (`gate`), from any vintage of it."""
    return Comparison(**{f.name: gate[f.name] for f in fields(Comparison) if f.name in gate})


def changes(comparison: Comparison) -> list[tuple[str, str, str]]:
    """The changed rows of a comparison: (change, check, how), regressions first."""
    return (
        [("regression", check, how) for check, how in comparison.regressions]
        + [("missing", check, "in the baseline, not here") for check in comparison.missing]
        + [("not run", check, side) for check, side in comparison.not_run]
        + [("fixed", check, how) for check, how in comparison.fixed]
        + [("new", check, how) for check, how in comparison.new]
    )


def _gate_line(comparison: Comparison) -> str:
    verdict = "INCOMPLETE" if comparison.not_run else "PASS" if comparison.ok else "FAIL"
    return (
        f"{verdict}: {len(comparison.regressions)} regressions, {len(comparison.missing)} missing, "
        f"{len(comparison.not_run)} not run, {len(comparison.fixed)} fixed, {len(comparison.new)} new"
    )


def _rows(columns: list[Column]) -> list[tuple[str, str, list[dict | None]]]:
    """The matrix: (area, check, its record in each column) by area, then check."""
    areas: dict[str, str] = {}
    for column in columns:
        for check, record in column.records.items():
            areas.setdefault(check, record["area"])
    return [
        (areas[check], check, [column.records.get(check) for column in columns])
        for check in sorted(areas, key=lambda check: (areas[check], check))
    ]


def _label(check: str) -> str:
    """A check's name within its area: the test and its parameters."""
    return check.split("::", 1)[-1]


def _shows_proof(columns: list[Column]) -> bool:
    return any(r["proof"] for column in columns for r in column.records.values())


def text(columns: list[Column]) -> str:
    """What the run prints: for each file its servers, the per-area table, reasons, proofs, curl lines and
    gate; then, for several columns, what changed in each against the first."""
    lines: list[str] = []
    for source in dict.fromkeys(column.source for column in columns):
        group = [column for column in columns if column.source == source]
        data = group[0].data
        records = [record for column in group for record in column.records.values()]
        lines.append(f"{source}:")
        lines += [server_line(server) for server in data.get("servers", [])]
        if not data.get("servers") and group[0].identity:
            lines.append(f"target: {group[0].identity}")
        lines += table_lines(area_counts(records)) + reason_lines(records) + finding_lines(records)
        if "proof" in data:
            lines += proof_lines(records, data["proof"])
        lines += perf_report.text_lines(records)
        lines += [f"repeat {r['id']}: {r['curl']}" for r in records if r["curl"]]
        if "gate" in data:
            lines += stored_gate(data["gate"]).lines(data["gate"]["baseline"])
    if len(columns) > 1:
        for column, compared in zip(columns[1:], comparisons(columns)[1:], strict=True):
            assert compared is not None
            baseline, comparison = compared
            lines.append(f"{column.name} against {baseline}: {_gate_line(comparison)}")
            lines += [f"{change}: {check}: {how}" for change, check, how in changes(comparison)]
    return "\n".join(lines) + "\n"


# Markdown


def md_text(value: str, limit: int | None = None) -> str:
    """Text for a Markdown table cell: one line, its Markdown and HTML taken literally."""
    value = " ".join(value.split())
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    return escape(_MD_SPECIAL.sub(r"\\\1", value), quote=False)


def _md_code(value: str) -> str:
    """A check id as a code span in a Markdown table cell."""
    value = " ".join(value.split()).replace("|", "\\|")
    ticks = "`" * (1 + max(len(run) for run in re.findall(r"`*", value)))
    pad = " " if "`" in value else ""
    return f"{ticks}{pad}{value}{pad}{ticks}"


def _md_cell(record: dict | None) -> str:
    if record is None:
        return "· not run"
    proof = f" ({record['proof']})" if record["proof"] in _PROVED else ""
    reason = f": {record['reason']}" if record["reason"] else ""
    return f"{_ICONS.get(record['outcome'], '')} {md_text(record['outcome'] + proof + reason, _CELL)}"


def _fence(body: str) -> str:
    ticks = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", body)), default=0))
    return f"{ticks}text\n{body.rstrip()}\n{ticks}"


def markdown(columns: list[Column], budget: int = PR_COMMENT, chain: bool = False) -> str:
    """The report in GitHub's Markdown within `budget` bytes: over it, the details go first, then the matrix
    rows of checks that passed everywhere, then those alike everywhere, the matrix, and rows of what changed;
    the report says what it left out. `chain`: each column against the one before it (a release history)."""
    compared = comparisons(columns, chain)
    rows = _rows(columns)
    alike = [row for row in rows if len({r["outcome"] if r else "" for r in row[2]}) > 1]
    plans = [
        ([], rows, True),
        (["the details"], rows, False),
        (
            ["the details", "the matrix rows of checks that passed everywhere"],
            [row for row in rows if any(r is None or r["outcome"] != "passed" for r in row[2])],
            False,
        ),
        (["the details", "the matrix rows of checks with the same outcome everywhere"], alike, False),
        (["the details", "the matrix"], [], False),
    ]
    change_rows = sum(len(changes(c[1])) for c in compared if c)
    lines = {
        check: f"| {_md_code(_label(check))} | " + " | ".join(map(_md_cell, records)) + " |"
        for _, check, records in rows
    }
    details = _md_details(columns, rows)
    for dropped, matrix_rows, with_details in plans:
        kept = [(area, lines[check]) for area, check, _ in matrix_rows]
        out = _markdown(columns, compared, dropped, budget, kept, details if with_details else [], change_rows)
        if len(out.encode()) <= budget:
            return out
    dropped = [*plans[-1][0], "some rows of what changed"]
    low, high = 0, change_rows  # the most rows of what changed that fit
    while low < high:
        middle = (low + high + 1) // 2
        out = _markdown(columns, compared, dropped, budget, [], [], middle)
        low, high = (middle, high) if len(out.encode()) <= budget else (low, middle - 1)
    return _markdown(columns, compared, dropped, budget, [], [], low)


def _markdown(
    columns: list[Column],
    compared: list[tuple[str, Comparison] | None],
    dropped: list[str],
    budget: int,
    rows: list[tuple[str, str]],
    details: list[str],
    change_rows: int,
) -> str:
    """One plan's Markdown: `rows` the matrix's (area, line), `details` their lines, at most `change_rows`
    rows of what changed."""
    proof = _shows_proof(columns)
    heads = list(OUTCOMES) + (list(_PROVED) if proof else [])
    total = len({check for column in columns for check in column.records})
    lines = [
        f"## pytest-vllm: {len(columns)} target{'s' if len(columns) > 1 else ''}, {total} checks",
        "",
        "| target | verdict | " + " | ".join(heads) + " | against the baseline |",
        "|---|---|" + "---:|" * len(heads) + "---|",
    ]
    for column, comparison in zip(columns, compared, strict=True):
        counts = column.counts()
        against = _gate_line(comparison[1]) if comparison else "the baseline"
        lines.append(
            f"| {md_text(column.name)} | {md_text(column.verdict())} | "
            + " | ".join(str(counts[h]) for h in heads)
            + f" | {md_text(against)} |"
        )
    if dropped:
        left_out = ", ".join(dropped[:-1]) + (" and " if len(dropped) > 1 else "") + dropped[-1]
        lines += [
            "",
            f"> **Over the {budget:,}-byte budget**, this report leaves out {left_out}: "
            "`python -m pytest_vllm.report --format html` shows everything.",
        ]
    if any(compared):
        lines += ["", "### What changed"]
    left = change_rows
    for column, comparison in zip(columns, compared, strict=True):
        if comparison is None:
            continue
        baseline, result = comparison
        rows_of = changes(result)
        lines += ["", f"**{md_text(column.name)}** against **{md_text(baseline)}**: {md_text(_gate_line(result))}"]
        if rows_of and left:
            lines += ["", "| change | check | how |", "|---|---|---|"]
            lines += [
                f"| {change} | {_md_code(check)} | {md_text(how, _CELL)} |" for change, check, how in rows_of[:left]
            ]
        if len(rows_of) > left:
            lines += ["", f"… and {len(rows_of) - left} more (left out for the budget)"]
        left = max(0, left - len(rows_of))
    lines += perf_report.markdown_lines([(column.name, column.records.values()) for column in columns])
    if rows:
        lines += ["", "### Checks by area"]
    for area, group in groupby(rows, key=lambda row: row[0]):
        names = " | ".join(md_text(c.name) for c in columns)
        lines += ["", f"#### {md_text(area)}", "", f"| check | {names} |", "|---|" + "---|" * len(columns)]
        lines += [line for _, line in group]
    return "\n".join(lines + details) + "\n"


def _md_details(columns: list[Column], rows: list[tuple[str, str, list[dict | None]]]) -> list[str]:
    """Each record's why, proof, curl line and traceback, folded, one <details> a record that has any."""
    lines = []
    for _, check, records in rows:
        for column, record in zip(columns, records, strict=True):
            if not record or not any(record[key] for key in ("why", "proof_reason", "curl", "details")):
                continue
            lines += ["", f"<details><summary>{escape(check)} · {escape(column.name)}: {record['outcome']}</summary>"]
            lines += [
                f"\n{key.replace('_', ' ')}: {md_text(record[key])}" for key in ("why", "proof_reason") if record[key]
            ]
            lines += ["\n" + _fence(record[key]) for key in ("curl", "details") if record[key]]
            lines += ["", "</details>"]
    return ["", "### Details", *lines] if lines else []


# HTML

_CSS = """
:root{--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--head:#f6f8fa;
--passed:#dafbe1;--failed:#ffebe9;--unsupported:#eef1f4;--skipped:#fff8c5;--error:#fbefff;--absent:#fff}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;
--head:#151b23;--passed:#12361f;--failed:#4a1419;--unsupported:#212830;--skipped:#3b2e00;--error:#37174a;
--absent:#0d1117}}
*{box-sizing:border-box}[hidden]{display:none!important}
body{margin:0;padding:1rem clamp(.5rem,3vw,2rem);background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}h3{font-size:1rem;margin:1rem 0 .3rem}
.muted{color:var(--muted)}table{border-collapse:collapse;width:100%}
th,td{border:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
thead th{background:var(--head);position:sticky;top:0;z-index:1}
.scroll{overflow-x:auto}.counts td.n{text-align:right;font-variant-numeric:tabular-nums}
.counts td.n:not(:empty){font-weight:600}.bad{color:#cf222e;font-weight:600}.good{color:#1a7f37;font-weight:600}
.passed{background:var(--passed)}.failed{background:var(--failed)}.unsupported{background:var(--unsupported)}
.skipped{background:var(--skipped)}.error{background:var(--error)}.absent{background:var(--absent)}
.matrix{font-size:.9rem}.matrix th[scope=row]{font-family:ui-monospace,monospace;font-weight:normal;
word-break:break-word;min-width:14rem}.matrix td{min-width:11rem}
tr.area th{background:var(--head);font-size:1rem}td code{overflow-wrap:anywhere}
.changes td:nth-child(2){min-width:min(26rem,55vw)}
summary h3{display:inline;color:var(--fg)}.badge{font-weight:600}
.reason{display:block;word-break:break-word}
details pre{white-space:pre-wrap;word-break:break-word;max-height:24rem;overflow:auto;font-size:.8rem;
background:var(--head);padding:.4rem;margin:.3rem 0}summary{cursor:pointer;color:var(--muted)}
form{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;margin:.5rem 0;position:sticky;top:0;
background:var(--bg);padding:.4rem 0;z-index:2}select{font:inherit;padding:.2rem;max-width:100%}label{max-width:100%}
@media (max-width:720px){.matrix thead{display:none}.matrix tr{display:block;border:1px solid var(--line);
margin:.5rem 0}.matrix th,.matrix td{display:block;border:0;border-top:1px solid var(--line);min-width:0}
.matrix td::before{display:block;font-size:.8rem;color:var(--muted)}
thead th{position:static}.counts{font-size:.85rem}}
"""

_JS = """
(() => {
  const form = document.getElementById('filters');
  const rows = [...document.querySelectorAll('tr.check')];
  const all = (selector) => [...document.querySelectorAll(selector)];
  function apply() {
    const f = Object.fromEntries(new FormData(form));
    const tally = {};
    let shown = 0;
    for (const row of rows) {
      const cells = [...row.querySelectorAll('td[data-col]')];
      const mine = cells.filter(td => f.target === 'all' || td.dataset.col === f.target);
      const outcome = f.outcome === 'all' || (f.outcome === 'changed'
        ? row.dataset.changed === 'yes' : mine.some(td => td.dataset.outcome === f.outcome));
      row.hidden = !(outcome && (f.area === 'all' || row.dataset.area === f.area));
      if (row.hidden) continue;
      shown++;
      for (const td of cells) for (const key of [td.dataset.outcome, td.dataset.proof]) {
        if (key) tally[td.dataset.col + ' ' + key] = (tally[td.dataset.col + ' ' + key] || 0) + 1;
      }
    }
    for (const td of all('td.n')) td.textContent = tally[td.dataset.col + ' ' + td.dataset.count] || 0;
    for (const el of all('.matrix [data-col]')) el.hidden = f.target !== 'all' && el.dataset.col !== f.target;
    for (const body of all('tbody[data-area]')) body.hidden = !body.querySelector('tr.check:not([hidden])');
    document.getElementById('shown').textContent = `${shown} of ${rows.length} checks shown (the counts above)`;
    document.body.dataset.shown = shown;
    const chosen = new URLSearchParams(Object.entries(f).filter(([, value]) => value !== 'all')).toString();
    history.replaceState(null, '', chosen ? '#' + chosen : location.pathname + location.search);
  }
  for (const [key, value] of new URLSearchParams(location.hash.slice(1))) {
    const select = form.elements[key];
    if (select && [...select.options].some(option => option.value === value)) select.value = value;
  }
  form.addEventListener('change', apply);
  apply();
})();
"""


def _select(name: str, label: str, options: list[tuple[str, str]]) -> str:
    choices = "".join(f'<option value="{escape(value)}">{escape(text)}</option>' for value, text in options)
    return f'<label>{label} <select name="{name}"><option value="all">all</option>{choices}</select></label>'


def _css_string(value: str) -> str:
    return '"' + "".join(c if c.isalnum() or c in " .-_:" else f"\\{ord(c):x} " for c in value) + '"'


def _html_cell(index: int, record: dict | None) -> str:
    if record is None:
        return f'<td class="absent" data-col="{index}"><span class="muted">not run</span></td>'
    outcome = escape(record["outcome"])
    proof = record["proof"] if record["proof"] in _PROVED else ""
    parts = [
        f'<td class="{outcome}" data-col="{index}" data-outcome="{outcome}" data-proof="{proof}">',
        f'<span class="badge">{outcome}</span>',
        f" <span class=muted>({proof})</span>" if proof else "",
        f'<span class="reason">{escape(record["reason"])}</span>' if record["reason"] else "",
    ]
    more = [(key, record[key]) for key in ("why", "proof_reason", "curl", "details") if record[key]]
    if more:
        parts.append("<details><summary>details</summary>")
        parts += [f"<pre>{escape(key.replace('_', ' '))}: {escape(value)}</pre>" for key, value in more]
        parts.append("</details>")
    return "".join(parts) + "</td>"


def html(columns: list[Column], chain: bool = False, preface: str = "") -> str:
    """The report as one standalone HTML page: verdict and counts, what changed, then the matrix with
    filters by area, outcome and target (also read from the URL's fragment, e.g. `#outcome=failed`).
    `chain`: each column against the one before it; `preface`: HTML shown before the verdict."""
    compared = comparisons(columns, chain)
    rows = _rows(columns)
    sources = ", ".join(dict.fromkeys(Path(c.source).name or "this run" for c in columns))
    labels = "".join(
        f'.matrix td[data-col="{i}"]::before{{content:{_css_string(c.name)}}}' for i, c in enumerate(columns)
    )
    plural = "s" if len(columns) > 1 else ""
    return "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>pytest-vllm: {escape(', '.join(c.name for c in columns))}</title>",
            f"<style>{_CSS}@media (max-width:720px){{{labels}}}</style></head>",  # a stacked cell's target
            "<body><header><h1>pytest-vllm compatibility report</h1>",
            f"<p class=muted>{len(columns)} target{plural}, {len(rows)} checks, from {escape(sources)}</p></header>",
            preface,
            _html_counts(columns, compared),
            _html_changes(columns, compared),
            perf_report.html([(column.name, column.records.values()) for column in columns]),
            _html_matrix(columns, rows, {check for c in compared if c for _, check, _ in changes(c[1])}),
            f"<script>{_JS}</script></body></html>\n",
        ]
    )


def _html_counts(columns: list[Column], compared: list[tuple[str, Comparison] | None]) -> str:
    heads = list(OUTCOMES) + (list(_PROVED) if _shows_proof(columns) else [])
    out = [
        "<section><h2>Verdict</h2><div class=scroll><table class=counts><thead><tr><th>target</th><th>verdict</th>",
        "".join(f"<th>{h}</th>" for h in heads),
        "<th>against the baseline</th></tr></thead><tbody>",
    ]
    for index, (column, comparison) in enumerate(zip(columns, compared, strict=True)):
        counts = column.counts()
        verdict = column.verdict()
        against = _gate_line(comparison[1]) if comparison else "the baseline"
        out += [
            f'<tr><th title="{escape(column.source)}">{escape(column.name)}',
            f"<div class=muted>{escape(column.identity)}</div>" if column.identity not in column.name else "",
            "</th>",
            f"<td class={'bad' if verdict.startswith('FAIL') else 'good'}>{escape(verdict)}</td>",
            "".join(f'<td class="n" data-col="{index}" data-count="{h}">{counts[h]}</td>' for h in heads),
            f"<td>{escape(against)}</td></tr>",
        ]
    return "".join(out) + "</tbody></table></div></section>"


def _html_changes(columns: list[Column], compared: list[tuple[str, Comparison] | None]) -> str:
    out = []
    for column, comparison in zip(columns, compared, strict=True):
        if comparison is None:
            continue
        baseline, result = comparison
        rows = changes(result)
        title = f"{escape(column.name)} against {escape(baseline)}: {escape(_gate_line(result))}"
        if not rows:
            out.append(f"<h3>{title}</h3><p class=muted>Nothing changed.</p>")
            continue
        out.append(f"<details{' open' if len(rows) <= _OPEN else ''}><summary><h3>{title}</h3></summary>")
        out.append("<div class=scroll><table class=changes><thead><tr><th>change</th><th>check</th><th>how</th>")
        out.append("</tr></thead><tbody>")
        for change, check, how in rows:
            tint = {"regression": "failed", "missing": "failed", "not run": "skipped", "fixed": "passed"}.get(
                change, ""
            )
            out.append(f"<tr class='{tint}'><td>{change}</td><td><code>{escape(check)}</code></td>")
            out.append(f"<td>{escape(how)}</td></tr>")
        out.append("</tbody></table></div></details>")
    return "<section><h2>What changed</h2>" + "".join(out) + "</section>" if out else ""


def _html_matrix(columns: list[Column], rows: list[tuple[str, str, list[dict | None]]], changed: set[str]) -> str:
    areas = list(dict.fromkeys(area for area, _, _ in rows))
    out = [
        "<section><h2>Checks by area</h2><form id=filters>",
        _select("area", "Area", [(a, a) for a in areas]),
        _select("outcome", "Outcome", [(o, o) for o in OUTCOMES] + [("changed", "changed against the baseline")]),
        _select("target", "Target", [(str(i), c.name) for i, c in enumerate(columns)]),
        f"<output id=shown class=muted>{len(rows)} checks</output></form>",
        "<div class=scroll><table class=matrix><thead><tr><th>check</th>",
        "".join(f'<th data-col="{i}">{escape(c.name)}</th>' for i, c in enumerate(columns)),
        "</tr></thead>",
    ]
    for area, group in groupby(rows, key=lambda row: row[0]):
        out.append(f'<tbody data-area="{escape(area)}"><tr class=area><th colspan="{len(columns) + 1}">')
        out.append(f"{escape(area)}</th></tr>")
        for _, check, records in group:
            mark = "yes" if check in changed else "no"
            out.append(f'<tr class="check" data-area="{escape(area)}" data-changed="{mark}">')
            out.append(f'<th scope="row" title="{escape(check)}">{escape(_label(check))}</th>')
            out += [_html_cell(i, record) for i, record in enumerate(records)]
            out.append("</tr>")
        out.append("</tbody>")
    return "".join(out) + "</table></div></section>"


def render(columns: list[Column], form: str, budget: int = PR_COMMENT) -> str:
    """The report in one of FORMATS."""
    if form == "md":
        return markdown(columns, budget)
    return html(columns) if form == "html" else text(columns)
