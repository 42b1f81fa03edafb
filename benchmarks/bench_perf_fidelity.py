"""Rerunnable: pytest_vllm.perf against `vllm bench serve`, on one real vLLM CPU server.

Launches vLLM with the plugin's tiny-chat fixture model and its flags on a free port (stopped by its
process group at the end), with VLLM_CPU_OMP_THREADS_BIND=nobind unless set: bound to one core of two,
the engine starves its own output thread and streams in bursts, whoever the client. Then, per
concurrency, runs the same workload with each tool in turn, each in a fresh process: ours, vLLM's,
ours, vLLM's, ... (`--runs` each). Round r uses seed r for both (fresh prompts each round, so no round
reads another's prefix cache); both send one warm-up request. Prints per metric the medians over runs
of each tool, their ratio ours/vLLM's and each tool's own range. Output tokens, completed and failed
must be equal; input tokens must be exactly num_prompts x input_len for ours (vLLM's random prompts
are text, decoded then re-encoded, and may miss by a few tokens: it warns so, shown below); the
other medians must be within TOLERANCE.

    flock /tmp/vllm-heavy.lock python benchmarks/bench_perf_fidelity.py [--runs 3] [--concurrency 1 8]

`vllm bench serve` is run as its CLI runs it (vllm.benchmarks.serve's parser and main): the `vllm`
script itself fails under vllm-cpu, whose distribution is not named `vllm`.
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

import httpx

from pytest_vllm import fixture_models
from pytest_vllm.processes import free_port, stop_process_group

MODEL = "tiny-chat"
TOLERANCE = 0.15  # the largest |ours/vLLM's - 1| accepted for a latency median or a throughput
EXACT = ("completed", "failed", "total_output_tokens")
COMPARED = (
    "duration",
    "request_throughput",
    "output_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
)
VLLM_BENCH = (
    "import sys\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "parser = FlexibleArgumentParser()\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)


def launch(folder: Path, log: Path) -> tuple[int, str]:
    """Start vLLM on tiny-chat; its pid and URL once it is ready."""
    port = free_port()
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
    argv += ["--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port), "--seed", "0"]
    argv += fixture_models.serve_args(MODEL, folder)
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", **os.environ}
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"vLLM exited with {process.returncode} before it was ready; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return process.pid, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_process_group(process.pid)
    raise SystemExit(f"vLLM was not ready within 600 s; see {log}")


def ours(url: str, args: argparse.Namespace, concurrency: int, seed: int, out: Path) -> dict:
    command = [sys.executable, "-m", "pytest_vllm.perf", "--url", url, "--model", MODEL, "--warmups", "1"]
    command += ["--input-len", str(args.input_len), "--output-len", str(args.output_len)]
    command += ["--num-prompts", str(args.num_prompts), "--max-concurrency", str(concurrency), "--seed", str(seed)]
    subprocess.run([*command, "--json", str(out)], check=True, stdout=subprocess.DEVNULL, timeout=600)
    return dict(json.loads(out.read_text())["results"][0])


def vllms(url: str, folder: Path, args: argparse.Namespace, concurrency: int, seed: int, out: Path) -> dict:
    command = [sys.executable, "-c", VLLM_BENCH, "--backend", "vllm", "--base-url", url]
    command += ["--endpoint", "/v1/completions", "--model", MODEL, "--tokenizer", str(folder)]
    command += ["--dataset-name", "random", "--random-input-len", str(args.input_len)]
    command += ["--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts)]
    command += ["--ignore-eos", "--max-concurrency", str(concurrency), "--seed", str(seed), "--num-warmups", "1"]
    command += ["--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "90,99", "--disable-tqdm"]
    command += ["--save-result", "--result-dir", str(out.parent), "--result-filename", out.name]
    with open(out.with_suffix(".log"), "wb") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=600)
    return dict(json.loads(out.read_text()))


def mismatch_warnings(folder: Path) -> set[str]:
    """vLLM's warnings that its random prompts came out longer or shorter than asked."""
    lines = (line for log in folder.glob("vllm-*.log") for line in log.read_text(errors="replace").splitlines())
    return {line.split("] ", 1)[-1] for line in lines if "tokens than expected" in line}


def compare(concurrency: int, mine: list[dict], theirs: list[dict], asked: int) -> bool:
    """Print the comparison at one concurrency; whether it agrees. `asked`: the input tokens asked for."""
    print(f"\nconcurrency {concurrency}: {len(mine)} runs each")
    print(f"{'metric':22} {'ours':>10} {'vLLM':>10} {'ratio':>7}   {'ours min-max':>17} {'vLLM min-max':>17}")
    a, b = [r["total_input_tokens"] for r in mine], [r["total_input_tokens"] for r in theirs]
    exact = set(a) == {asked}
    agrees = exact
    print(f"{'total_input_tokens':22} {a[0]:>10} {b[0]:>10} {'asked' if exact else 'WRONG':>7}   {a!s:>17} {b!s:>17}")
    for key in EXACT:
        a, b = [r[key] for r in mine], [r[key] for r in theirs]
        equal = len(set(a) | set(b)) == 1
        agrees &= equal
        print(f"{key:22} {a[0]:>10} {b[0]:>10} {'equal' if equal else 'DIFFER':>7}   {a!s:>17} {b!s:>17}")
    for key in COMPARED:
        a, b = [r[key] for r in mine], [r[key] for r in theirs]
        ratio = statistics.median(a) / statistics.median(b)
        within = abs(ratio - 1) <= TOLERANCE
        agrees &= within
        mark = " " if within else "!"
        print(
            f"{key:22} {statistics.median(a):>10.2f} {statistics.median(b):>10.2f} {ratio:>7.3f}{mark}"
            f"  {min(a):>8.2f}-{max(a):<8.2f} {min(b):>8.2f}-{max(b):<8.2f}"
        )
    return agrees


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--num-prompts", type=int, default=32)
    args = parser.parse_args()
    folder = fixture_models.build(MODEL)
    with tempfile.TemporaryDirectory(prefix="bench-perf-fidelity-") as tmp:
        pid, url = launch(folder, Path(tmp) / "vllm.log")
        print(f"vLLM on {url} (pid {pid}); workload: {args.num_prompts} prompts, {args.input_len} tokens in,")
        print(f"{args.output_len} out; tolerance on medians and throughputs: {TOLERANCE:.0%}")
        verdicts = []
        try:
            for concurrency in args.concurrency:
                mine, theirs = [], []
                for seed in range(args.runs):
                    mine.append(ours(url, args, concurrency, seed, Path(tmp) / f"ours-{concurrency}-{seed}.json"))
                    theirs.append(
                        vllms(url, folder, args, concurrency, seed, Path(tmp) / f"vllm-{concurrency}-{seed}.json")
                    )
                verdicts.append(compare(concurrency, mine, theirs, args.num_prompts * args.input_len))
            for warning in sorted(mismatch_warnings(Path(tmp))):
                print(f"vLLM warned: {warning}")
        finally:
            stop_process_group(pid)
    print("\nagree" if all(verdicts) else "\nDISAGREE (! marks a ratio beyond the tolerance)")


if __name__ == "__main__":
    main()
