"""Rerunnable: the embedded default's time from command to first test.

Times `python -m pytest_vllm` (no URL: build the tiny models, launch vLLM on this CPU) up to
the first check, split into the model build, what comes before the first check's setup (the
plugin's own overhead: interpreter, imports, collection; target < 5 s) and the server start
inside that setup. Run it once with a cold model cache (PYTEST_VLLM_CACHE=<empty dir>) to see a build.

    python benchmarks/bench_startup.py
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRST_CHECK = "test_health_is_200_with_empty_body"


def main() -> None:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest_vllm.fixture_models", "tiny-chat"], check=True, stdout=subprocess.DEVNULL
    )
    build = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder, "report.json")
        command_at = time.time()
        subprocess.run(
            [sys.executable, "-m", "pytest_vllm", "-k", FIRST_CHECK, "-q", "--vllm-report", str(report)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        data = json.loads(report.read_text())
    setup_at = min(check["started"] for check in data["checks"]) - command_at
    start = data["servers"][0]["startup_seconds"]
    print(f"model build (tiny-chat, as the cache stood):   {build:6.1f} s  (then cached for the run)")
    print(
        f"command to the first check's setup:           {setup_at:6.1f} s  (interpreter, imports, collection;"
        " target < 5 s)"
    )
    print(f"vLLM server start in that setup:              {start:6.1f} s")
    print(f"command to the first check running:          ~{setup_at + start:6.1f} s  (+ the model build when cold)")


if __name__ == "__main__":
    main()
