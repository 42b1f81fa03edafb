"""Rerunnable: the embedded default's time, from the command to its first check and to its last.

Runs `python -m pytest_vllm` (no URL: build the tiny models, launch vLLM on this CPU, run the suites) RUNS
times and prints, per run and as min / median / max: the command to the first check's start, to the last
check's end, to the process's exit, and each server's own start-up. `--cold` gives every run an empty model
cache (the tiny models are built again; the vLLM install stays). Extra arguments go to pytest-vllm.

    python benchmarks/bench_startup.py [--runs 3] [--cold] [-- PYTEST-VLLM-ARGS...]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(cold: bool, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTEST_VLLM_CACHE": folder} if cold else dict(os.environ)
        report = Path(folder, "report.json")
        command_at = time.time()
        subprocess.run(
            [sys.executable, "-m", "pytest_vllm", "-q", "--vllm-report", str(report), *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            check=False,  # vLLM deviates from OpenAI somewhere: the exit status is 1
        )
        exited = time.time() - command_at
        data = json.loads(report.read_text())
    checks = data["checks"]
    figures = {
        "first check": min(check["started"] for check in checks) - command_at,
        "last check": max(check["started"] + check["duration"] for check in checks) - command_at,
        "exit": exited,
    }
    for server in sorted(data["servers"], key=lambda server: server["model"]):
        name = f"start {server['model']}"
        figures[name if name not in figures else name + " (2nd)"] = server["startup_seconds"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="an empty model cache for every run")
    parser.add_argument("extra", nargs="*", help="arguments for pytest-vllm (after --)")
    args = parser.parse_args()
    runs = []
    for number in range(1, args.runs + 1):
        runs.append(one_run(args.cold, args.extra))
        print(f"run {number}: " + ", ".join(f"{name} {value:.0f} s" for name, value in runs[-1].items()), flush=True)
    print(f"\n{'seconds (' + ('cold' if args.cold else 'warm') + ')':<34}{'min':>8}{'median':>8}{'max':>8}")
    for name in runs[0]:
        values = [run[name] for run in runs if name in run]
        print(f"{name:<34}{min(values):8.1f}{statistics.median(values):8.1f}{max(values):8.1f}")


if __name__ == "__main__":
    main()
