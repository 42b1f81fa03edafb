"""Rerunnable: the ceiling and the error of pytest_vllm.perf's client, against the instant endpoint.

Starts tests/instant_endpoint.py in a process of its own, then
- with no delays, drives it at concurrency 1 to 64: the requests/s and chunks/s the client reaches
  (one chunk per token; the endpoint answers at once, so the client is the bottleneck) and its send lag;
- with known delays (TTFT 50 ms, ITL 10 ms, 16 tokens), the error of each measured median against the
  injected value, at concurrency 1 and 16.

    python benchmarks/bench_perf_client.py [--prompts 256] [--tokens 16]
"""

import argparse
import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytest_vllm.perf import Load, Workload, measure

ENDPOINT = Path(__file__).resolve().parents[1] / "tests" / "instant_endpoint.py"
TTFT, ITL = 0.050, 0.010


@contextmanager
def endpoint(ttft: float, itl: float) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(ENDPOINT), "--ttft", str(ttft), "--itl", str(itl)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256, help="requests per point")
    parser.add_argument("--tokens", type=int, default=16, help="output tokens (chunks) per request")
    args = parser.parse_args()
    print(f"Ceiling: no delays, {args.prompts} requests of 32 prompt tokens and {args.tokens} output chunks")
    print(f"{'concurrency':>11} {'requests/s':>11} {'chunks/s':>10} {'mean lag ms':>12} {'p99 lag ms':>11}")
    with endpoint(0, 0) as url:
        for concurrency in (1, 2, 4, 8, 16, 32, 64):
            result = asyncio.run(measure(url, "m", Workload(32, args.tokens, args.prompts), Load(concurrency)))
            assert result["failed"] == 0, result["first_error"]
            print(
                f"{concurrency:>11} {result['request_throughput']:>11.0f} {result['output_throughput']:>10.0f} "
                f"{result['mean_send_lag_ms']:>12.2f} {result['p99_send_lag_ms']:>11.2f}"
            )
    tokens = 16
    injected = {"ttft": TTFT * 1000, "itl": ITL * 1000, "tpot": ITL * 1000, "e2el": (TTFT + ITL * (tokens - 1)) * 1000}
    print(
        f"\nError at injected TTFT {TTFT * 1000:.0f} ms, ITL {ITL * 1000:.0f} ms, {tokens} tokens: measured - injected"
    )
    print(f"{'concurrency':>11} " + " ".join(f"{'median ' + m.upper():>12} {'p99':>6}" for m in injected))
    with endpoint(TTFT, ITL) as url:
        for concurrency in (1, 16):
            result = asyncio.run(measure(url, "m", Workload(32, tokens, 64), Load(concurrency)))
            cells = [
                f"{result[f'median_{m}_ms'] - value:>+12.2f} {result[f'p99_{m}_ms'] - value:>+6.2f}"
                for m, value in injected.items()
            ]
            print(f"{concurrency:>11} " + " ".join(cells))


if __name__ == "__main__":
    main()
