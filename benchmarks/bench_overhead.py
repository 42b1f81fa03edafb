"""Rerunnable: what pytest-vllm costs a pytest run that has it installed but does not use it.

Times `pytest --collect-only` of a small test file with the plugin and with `-p no:vllm`,
alternating, and prints the medians, the minima (least disturbed by other load) and their
differences. Target: < 50 ms.

    python benchmarks/bench_overhead.py [--runs 15]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = "\n".join(f"def test_{i}():\n    assert {i} == {i}\n" for i in range(50))


def timed(args: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "test_plain.py").write_text(TESTS)
        timed([], folder)  # warm the file system cache
        with_plugin, without = [], []
        for _ in range(runs):
            with_plugin.append(timed([], folder))
            without.append(timed(["-p", "no:vllm"], folder))
    print(f"pytest --collect-only, 50 tests, {runs} runs each     median      min")
    for name, times in (("with pytest-vllm installed, unused", with_plugin), ("with -p no:vllm", without)):
        print(f"  {name:38} {statistics.median(times) * 1000:7.1f} ms {min(times) * 1000:7.1f} ms")
    median = statistics.median(with_plugin) - statistics.median(without)
    least = min(with_plugin) - min(without)
    print(f"  {'overhead (target < 50 ms)':38} {median * 1000:7.1f} ms {least * 1000:7.1f} ms")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pytest_vllm.plugin"], check=True)
    print(f"  (python -c 'import pytest_vllm.plugin': {(time.perf_counter() - start) * 1000:.0f} ms incl. interpreter)")


if __name__ == "__main__":
    main()
