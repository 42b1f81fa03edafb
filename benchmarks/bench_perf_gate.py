"""Rerunnable: the performance gate on real vLLM. A server against its own baseline passes; the same server
slowed on purpose (the fault proxy holds back each streamed event) fails it, naming the metric and the ratio.

Launches tiny-chat on this CPU (or tests --url), then runs the performance checks three times: the
baseline, the same server gated on it, and the server behind the slowing proxy gated on it.

    python benchmarks/bench_perf_gate.py [--url URL --model NAME] [--delay 0.02] [-k short]
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from pytest_vllm import fixture_models
from pytest_vllm.launchers import ServerSpec, SubprocessLauncher
from pytest_vllm.proxy import Fault, FaultProxy
from pytest_vllm.session import EMBEDDED_ENV


class SlowEvents(Fault):
    """Each streamed event held back `event_delay` seconds: a slow link, or a gateway that buffers."""

    name = "slow-events"


def perf_run(url: str, model: str, report: Path, keyword: str, baseline: Path | None = None) -> str:
    """The gate's lines of one run of the performance checks."""
    args = [sys.executable, "-m", "pytest_vllm", "--vllm-url", url, "--vllm-model", model, "--vllm-perf"]
    args += ["-m", "vllm_perf", "-k", keyword, "--vllm-report", str(report), "-p", "no:randomly"]
    if baseline:
        args += ["--vllm-baseline", str(baseline)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    lines = done.stdout.splitlines()
    return "\n".join(line for line in lines if line.startswith(("baseline", "regression", "FAILED", "perf ", "  ")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds each streamed event is held back")
    parser.add_argument("-k", dest="keyword", default="short", help="which workloads (pytest -k)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        launcher, server = SubprocessLauncher(None, 120), None
        if args.url is None:
            path = fixture_models.build("tiny-chat")
            spec = ServerSpec(str(path), "tiny-chat", tuple(fixture_models.serve_args("tiny-chat", path)), EMBEDDED_ENV)
            server = launcher.start(spec, work, 900)
        url = args.url or server.base_url
        try:
            baseline = work / "baseline.json"
            print("baseline run:\n" + perf_run(url, args.model, baseline, args.keyword), flush=True)
            print(
                "\nthe same server, gated on it:\n"
                + perf_run(url, args.model, work / "same.json", args.keyword, baseline),
                flush=True,
            )
            slow = SlowEvents()
            slow.event_delay = args.delay
            with FaultProxy(url) as proxy:
                slowed = perf_run(proxy.url(slow), args.model, work / "slowed.json", args.keyword, baseline)
            print(f"\nbehind a proxy holding each streamed event {args.delay * 1000:.0f} ms, gated on it:\n{slowed}")
        finally:
            if server is not None:
                launcher.stop(server)


if __name__ == "__main__":
    main()
