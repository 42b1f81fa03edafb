"""Rerunnable: wall time of the core suites against a running server, with and without xdist.

Runs the shipped core suites twice (plain, then `-n 2`) against `--vllm-url`, and from each
run's results file sums the raw time of every HTTP request the checks made. The overhead
ratio is the suites' wall time over that sum (targets: all core checks < 60 s on 2 cores,
ratio < 1.5 without xdist; with xdist requests overlap, so the ratio can fall below 1).

    python benchmarks/bench_suites.py --vllm-url http://127.0.0.1:8000 [--vllm-api-key KEY]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_vllm.cli import suites_dir

CORE = [
    "health",
    "models",
    "completions",
    "chat",
    "streaming",
    "schema",
    "tokenize",
    "metrics",
    "errors",
    "auth",
    "fuzz",
]


def run(url: str, key: str | None, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder, "report.json")
        files = [str(suites_dir() / f"test_{name}.py") for name in CORE]
        args = [
            sys.executable,
            "-m",
            "pytest",
            *files,
            "-q",
            "-p",
            "no:cacheprovider",
            "--vllm-url",
            url,
            "--vllm-report",
            str(report),
            *extra,
        ]
        if key:
            args += ["--vllm-api-key", key]
        started = time.perf_counter()
        subprocess.run(args, stdout=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - started
        data = json.loads(report.read_text())
    checks = data["checks"]
    return {
        "wall": wall,
        "session": data["duration"],
        "checks": len(checks),
        "requests": sum(c["request_seconds"] for c in checks),
        "outcomes": {o: sum(1 for c in checks if c["outcome"] == o) for o in {c["outcome"] for c in checks}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-url", required=True)
    parser.add_argument("--vllm-api-key")
    args = parser.parse_args()
    print(f"core suites ({', '.join(CORE)}) against {args.vllm_url}")
    print(f"{'run':8} {'checks':>6} {'wall s':>8} {'session s':>10} {'requests s':>11} {'ratio':>6}  outcomes")
    for name, extra in (("plain", []), ("-n 2", ["-n", "2"])):
        r = run(args.vllm_url, args.vllm_api_key, extra)
        ratio = r["session"] / r["requests"] if r["requests"] else float("nan")
        print(
            f"{name:8} {r['checks']:>6} {r['wall']:>8.1f} {r['session']:>10.1f} {r['requests']:>11.1f} "
            f"{ratio:>6.2f}  {r['outcomes']}"
        )
    print("wall: the command; session: pytest's own run; ratio: session / summed request time")


if __name__ == "__main__":
    main()
