"""Rerunnable: what pytest-vllm costs a pytest run that has it installed but does not use it.

Times `pytest --collect-only` of a small test file with the plugin and with `-p no:vllm`,
alternating, and prints the medians and their difference. Target: < 50 ms.

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
    subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", *args],
                   cwd=cwd, check=True, stdout=subprocess.DEVNULL)
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
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"pytest --collect-only, 50 tests, median of {runs} runs each")
    print(f"  with pytest-vllm installed, unused: {a * 1000:7.1f} ms")
    print(f"  with -p no:vllm:                    {b * 1000:7.1f} ms")
    print(f"  overhead:                           {(a - b) * 1000:7.1f} ms (target < 50 ms)")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pytest_vllm.plugin"], check=True)
    print(f"  (python -c 'import pytest_vllm.plugin': {(time.perf_counter() - start) * 1000:.0f} ms incl. interpreter)")


if __name__ == "__main__":
    main()
