"""Serving performance of an OpenAI-compatible server, measured as `vllm bench serve` measures it.

One point is a `Workload` (what is asked) under a `Load` (how it arrives):

    result = await measure(base_url, model, Workload(input_len=64, output_len=32, num_prompts=32),
                           Load(max_concurrency=4), api_key=None, timeout=600, goodput={"ttft": 500})
    summary = await sweep(base_url, model, workload, runs=3, progress=print)  # concurrency 1, 2, 4, ...
    spread(list_of_results)  # {metric: {"min", "median", "max"}} over runs

`measure` returns one flat dict with vLLM's keys and definitions (`mean_/median_/std_/p90_/p99_`
`<ttft|tpot|itl|e2el>_ms`, `request_throughput`, `output_throughput`, `total_token_throughput`,
`request_goodput`, `completed`, `failed`, `total_input_tokens`, `total_output_tokens`, `duration`),
plus `first_error` and how late the client sent requests against their schedule
(`mean_/p99_/max_send_lag_ms`). Prompts are token ids drawn with the seed from ids the server's
/tokenize gives for a sample text, sent with `ignore_eos` and `max_tokens`, so token counts are
exact. `python -m pytest_vllm.perf --help` runs it from a shell.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

METRICS = ("ttft", "tpot", "itl", "e2el")  # the latencies reported, in milliseconds
PERCENTILES = (90, 99)
SLO_METRICS = ("ttft", "tpot", "e2el")  # what a goodput SLO may name, as vLLM's --goodput
SETUP_KEYS = ("num_prompts", "input_len", "output_len", "request_rate", "burstiness", "max_concurrency", "seed")
SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! "
    "In 1969, 12 astronauts began training; by 1972 six crews had walked on the Moon. "
    "Servers stream tokens: latency, throughput, goodput and queueing all matter (see p99). "
    "Water boils at 100 degrees Celsius, while iron melts near 1538. Why? Ask a physicist, "
    "or read chapter 7 of any textbook about thermodynamics, chemistry and materials."
)
# Ids drawn from when the server has no /tokenize: past the specials and bytes most vocabularies begin with.
FALLBACK_IDS = range(1000, 2000)


class PerfError(Exception):
    """The measurement could not be made (not: a request failed, which the result counts)."""


@dataclass(frozen=True)
class Workload:
    """What is asked: `num_prompts` prompts of `input_len` token ids, each answered with exactly `output_len`
    tokens (ignore_eos), drawn reproducibly from `seed`; on /v1/completions or, with `chat`, on
    /v1/chat/completions (whose chat template adds prompt tokens)."""

    input_len: int = 64
    output_len: int = 32
    num_prompts: int = 32
    seed: int = 0
    stream: bool = True
    chat: bool = False

    def __post_init__(self) -> None:
        for name in ("input_len", "output_len", "num_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"Workload.{name} must be at least 1, not {getattr(self, name)}")


@dataclass(frozen=True)
class Load:
    """How requests arrive: at `request_rate` per second with gamma gaps (`burstiness` 1.0 is Poisson; inf is
    all at once), at most `max_concurrency` in flight (None: no cap)."""

    max_concurrency: int | None = None
    request_rate: float = math.inf
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"Load.max_concurrency must be at least 1 or None, not {self.max_concurrency}")
        if not self.request_rate > 0:
            raise ValueError(f"Load.request_rate must be positive (inf: all at once), not {self.request_rate}")
        if not self.burstiness > 0:
            raise ValueError(f"Load.burstiness must be positive (1.0: Poisson), not {self.burstiness}")


@dataclass
class _Outcome:
    """One request as the client saw it; times from time.perf_counter()."""

    sent: float = 0.0
    send_lag: float = 0.0
    ended: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str = ""


@dataclass(frozen=True)
class SweepProgress:
    """Where a sweep is: about to run `run` of `runs` at `max_concurrency` (point `point`)."""

    point: int
    max_concurrency: int
    run: int
    runs: int
    elapsed_s: float
    left_s: float | None  # at most about this long left; None before a run has been timed

    def __str__(self) -> str:
        left = "" if self.left_s is None else f", at most ~{self.left_s:.0f} s left"
        return (
            f"perf point {self.point} (concurrency {self.max_concurrency}), run {self.run}/{self.runs}, "
            f"{self.elapsed_s:.0f} s in{left}"
        )


def arrival_times(num: int, request_rate: float, burstiness: float, rng: random.Random) -> list[float]:
    """Seconds after the start at which each request is due, as vLLM's serve.py schedules them: gamma gaps
    (shape `burstiness`, mean 1/rate), summed, then rescaled so that the last lands at num/rate."""
    if math.isinf(request_rate):
        return [0.0] * num
    if math.isinf(burstiness):
        gaps = [1.0 / request_rate] * num
    else:
        gaps = [rng.gammavariate(burstiness, 1.0 / (request_rate * burstiness)) for _ in range(num)]
    times = list(itertools.accumulate(gaps))
    scale = (num / request_rate) / times[-1]
    return [t * scale for t in times]


def percentile(values: Sequence[float], p: float) -> float:
    """numpy.percentile's default (linear interpolation); 0.0 for no values, as vLLM reports."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_goodput(pairs: Sequence[str]) -> dict[str, float]:
    """`["ttft:500", "tpot:50"]` -> {"ttft": 500.0, "tpot": 50.0} (milliseconds), as vLLM's --goodput."""
    slos = {}
    for pair in pairs:
        name, _, value = pair.partition(":")
        try:
            slos[name] = float(value)
        except ValueError:
            raise ValueError(f"goodput {pair!r} is not NAME:MILLISECONDS (e.g. ttft:500)") from None
    _check_goodput(slos)
    return slos


def _check_goodput(slos: dict[str, float]) -> None:
    for name, value in slos.items():
        if name not in SLO_METRICS or value < 0:
            raise ValueError(
                f"goodput SLO {name}:{value} is invalid: name one of {SLO_METRICS}, with milliseconds >= 0"
            )


async def measure(
    base_url: str,
    model: str,
    workload: Workload,
    load: Load,
    *,
    api_key: str | None = None,
    timeout: float = 600.0,
    goodput: dict[str, float] | None = None,
    warmups: int = 1,
    detailed: bool = False,
) -> dict[str, Any]:
    """Measure one point: `workload` sent under `load` to `model` at `base_url` (e.g. http://host:8000).

    `timeout`: the most one request may take, in seconds (it then counts as failed). `goodput`: SLOs in ms
    by metric ({"ttft": 500, "tpot": 50, "e2el": 5000}); a request is good when within all. `warmups`:
    requests sent before the clock starts (`vllm bench serve --num-warmups`, default 0 there).
    `detailed`: add per-request lists as `vllm bench serve --save-detailed` (ttfts, itls, latencies,
    start_times, output_lens, errors) and send_lags.
    """
    slos = dict(goodput or {})
    _check_goodput(slos)
    if not workload.stream and {"ttft", "tpot"} & set(slos):
        raise ValueError("goodput on ttft or tpot needs a streamed workload: without streaming only e2el is measured")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with _Clients(base_url.rstrip("/"), headers, timeout) as clients:
        async with clients.lend() as client:
            bodies = await _request_bodies(client, model, workload, timeout)
        path = "/v1/chat/completions" if workload.chat else "/v1/completions"

        async def send(body: dict[str, Any], due: float) -> _Outcome:
            async with clients.lend() as client:
                return await _send(client, path, body, due, workload.stream, timeout)

        if warmups:
            slot = asyncio.Semaphore(load.max_concurrency or warmups)
            first = await asyncio.gather(*(_capped(slot, send, bodies[0]) for _ in range(warmups)))
            if errors := [o.error for o in first if o.error]:
                raise PerfError(f"{len(errors)} of {warmups} warm-up requests to {base_url}{path} failed: {errors[0]}")
        due = arrival_times(
            workload.num_prompts, load.request_rate, load.burstiness, random.Random(f"a{workload.seed}")
        )
        start = time.perf_counter()
        outcomes = await _dispatch(send, bodies, due, start, load.max_concurrency)
        duration = time.perf_counter() - start
    result = _metrics(outcomes, duration, workload, slos)
    result.update(_setup(workload, load))
    if detailed:
        result.update(_details(outcomes, start))
    return result


class _Clients:
    """httpx clients of one connection each, lent for one request at a time. (One client's pool scans all its
    connections for every request, which would cap the requests per second at high concurrency.)"""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        self._options: dict[str, Any] = {
            "base_url": base_url,
            "headers": headers,
            "timeout": httpx.Timeout(timeout),
            "limits": httpx.Limits(max_connections=1, max_keepalive_connections=1),
            "verify": httpx.create_ssl_context(),  # made once: it loads the CA bundle
        }
        self._free: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[httpx.AsyncClient]:
        if not self._free:
            self._all.append(httpx.AsyncClient(**self._options))
            self._free.append(self._all[-1])
        client = self._free.pop()
        try:
            yield client
        finally:
            self._free.append(client)

    async def __aenter__(self) -> _Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(client.aclose() for client in self._all))


async def _capped(slot: asyncio.Semaphore, send: Callable[..., Any], body: dict[str, Any]) -> _Outcome:
    async with slot:
        outcome: _Outcome = await send(body, time.perf_counter())
        return outcome


async def _dispatch(
    send: Callable[[dict[str, Any], float], Any],
    bodies: list[dict[str, Any]],
    due: list[float],
    start: float,
    max_concurrency: int | None,
) -> list[_Outcome]:
    """Send each body when it is due and, under a cap, when a slot is free; a request's send lag counts from
    the later of the two."""
    freed: asyncio.Queue[float] | None = None
    if max_concurrency is not None:
        freed = asyncio.Queue()
        for _ in range(max_concurrency):
            freed.put_nowait(start)

    async def one(body: dict[str, Any], scheduled: float) -> _Outcome:
        ready = await freed.get() if freed is not None else scheduled
        try:
            outcome: _Outcome = await send(body, max(scheduled, ready))
            return outcome
        finally:
            if freed is not None:
                freed.put_nowait(time.perf_counter())

    tasks = []
    for body, offset in zip(bodies, due, strict=True):
        scheduled = start + offset
        wait = scheduled - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.ensure_future(one(body, scheduled)))
    return list(await asyncio.gather(*tasks))


async def _send(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], due: float, stream: bool, timeout: float
) -> _Outcome:
    """Send one request and time it; any failure is recorded in the outcome, never raised."""
    outcome = _Outcome()
    outcome.sent = time.perf_counter()
    outcome.send_lag = max(0.0, outcome.sent - due)
    try:
        await asyncio.wait_for(_exchange(client, path, body, stream, outcome), timeout)
    except asyncio.TimeoutError:
        outcome.error = f"no complete answer within the {timeout:g} s timeout"
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:  # transport errors, malformed answers
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.ended = time.perf_counter()
    return outcome


async def _exchange(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], stream: bool, outcome: _Outcome
) -> None:
    sent = outcome.sent
    async with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")
            outcome.error = f"HTTP {response.status_code}: {text[:300]}"
            return
        if not stream:
            answer = json.loads(await response.aread())
            outcome.latency = outcome.ttft = time.perf_counter() - sent
            _count(answer.get("usage"), outcome)
            return
        last = sent
        chunks = 0
        async for line in response.aiter_lines():
            data = line[5:].strip()
            if not line.startswith("data:") or data == "[DONE]":
                continue  # blank separators, SSE comments (pings), the end (read on: the connection is reused)
            message = json.loads(data)
            if message.get("choices"):
                now = time.perf_counter()
                if chunks:
                    outcome.itl.append(now - last)
                else:
                    outcome.ttft = now - sent
                last = now
                chunks += 1
            elif message.get("usage"):
                _count(message["usage"], outcome)
            elif "error" in message:
                outcome.error = f"error in the stream: {json.dumps(message['error'])[:300]}"
                return
        if not chunks:
            outcome.error = "the stream ended without a chunk that has choices (no first token)"
            return
        outcome.latency = last - sent
        outcome.output_tokens = outcome.output_tokens or chunks  # without usage: one token a chunk


def _count(usage: dict[str, Any] | None, outcome: _Outcome) -> None:
    if usage:
        outcome.output_tokens = int(usage.get("completion_tokens") or 0)
        outcome.prompt_tokens = int(usage.get("prompt_tokens") or 0)


async def _request_bodies(client: httpx.AsyncClient, model: str, workload: Workload, timeout: float) -> list[dict]:
    """The workload's request bodies: prompts of token ids drawn from ids the server itself gave."""
    ids, max_model_len = await _vocabulary(client, model, timeout)
    if max_model_len and workload.input_len + workload.output_len > max_model_len:
        raise PerfError(
            f"input_len {workload.input_len} + output_len {workload.output_len} exceeds the model's max_model_len "
            f"{max_model_len}: choose shorter lengths"
        )
    rng = random.Random(f"p{workload.seed}")
    prompts = [[rng.choice(ids) for _ in range(workload.input_len)] for _ in range(workload.num_prompts)]
    common: dict[str, Any] = {"model": model, "ignore_eos": True, "stream": workload.stream}
    if workload.stream:
        common["stream_options"] = {"include_usage": True}
    if not workload.chat:
        return [{**common, "prompt": prompt, "max_tokens": workload.output_len} for prompt in prompts]
    texts = await asyncio.gather(*(_detokenize(client, model, prompt, timeout) for prompt in prompts))
    return [
        {**common, "messages": [{"role": "user", "content": text}], "max_completion_tokens": workload.output_len}
        for text in texts
    ]


async def _vocabulary(client: httpx.AsyncClient, model: str, timeout: float) -> tuple[list[int], int | None]:
    """Token ids to draw prompts from, and the model's max_model_len when the server says it."""
    try:
        response = await client.post(
            "/tokenize", json={"model": model, "prompt": SAMPLE_TEXT, "add_special_tokens": False}, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise PerfError(f"cannot reach {client.base_url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code in (404, 405):  # not vLLM (a gateway, another server)
        return list(FALLBACK_IDS), None
    if response.status_code != 200:
        raise PerfError(f"POST {client.base_url}/tokenize answered {response.status_code}: {response.text[:300]}")
    answer = response.json()
    return sorted(set(answer["tokens"])), answer.get("max_model_len")


async def _detokenize(client: httpx.AsyncClient, model: str, ids: list[int], timeout: float) -> str:
    response = await client.post("/detokenize", json={"model": model, "tokens": ids}, timeout=timeout)
    if response.status_code != 200:
        raise PerfError(
            f"a chat workload needs the server's /detokenize (vLLM has it); it answered {response.status_code}: "
            f"{response.text[:300]}"
        )
    return str(response.json()["prompt"])


def _metrics(outcomes: list[_Outcome], duration: float, workload: Workload, slos: dict[str, float]) -> dict[str, Any]:
    """vLLM's calculate_metrics over the outcomes, with its keys."""
    done = [o for o in outcomes if not o.error]
    failed = sorted((o for o in outcomes if o.error), key=lambda o: o.ended)
    tpot_all = [(o.latency - o.ttft) / (o.output_tokens - 1) if o.output_tokens > 1 else 0.0 for o in done]
    series = {
        "ttft": [o.ttft for o in done],
        "tpot": [t for o, t in zip(done, tpot_all, strict=True) if o.output_tokens > 1],
        "itl": [gap for o in done for gap in o.itl],
        "e2el": [o.latency for o in done],
    }
    total_input = sum(o.prompt_tokens or workload.input_len for o in done)
    total_output = sum(o.output_tokens for o in done)
    result: dict[str, Any] = {
        "duration": duration,
        "completed": len(done),
        "failed": len(failed),
        "first_error": failed[0].error if failed else None,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": len(done) / duration,
        "request_goodput": _good(done, tpot_all, slos) / duration if slos else None,
        "output_throughput": total_output / duration,
        "total_token_throughput": (total_input + total_output) / duration,
    }
    for name, values in series.items():
        measured = workload.stream or name == "e2el"
        result.update(_summary(name, values) if measured else dict.fromkeys(_summary(name, []), None))
    lags = [o.send_lag * 1000 for o in outcomes]
    result["mean_send_lag_ms"] = statistics.fmean(lags)
    result["p99_send_lag_ms"] = percentile(lags, 99)
    result["max_send_lag_ms"] = max(lags)
    return result


def _summary(name: str, seconds: list[float]) -> dict[str, float]:
    ms = [value * 1000 for value in seconds]
    summary = {
        f"mean_{name}_ms": statistics.fmean(ms) if ms else 0.0,
        f"median_{name}_ms": statistics.median(ms) if ms else 0.0,
        f"std_{name}_ms": statistics.pstdev(ms) if ms else 0.0,
    }
    summary.update({f"p{p}_{name}_ms": percentile(ms, p) for p in PERCENTILES})
    return summary


def _good(done: list[_Outcome], tpots: list[float], slos: dict[str, float]) -> int:
    values = {"ttft": [o.ttft for o in done], "tpot": tpots, "e2el": [o.latency for o in done]}
    return sum(all(values[name][i] * 1000 <= slo for name, slo in slos.items()) for i in range(len(done)))


def _setup(workload: Workload, load: Load) -> dict[str, Any]:
    rate: float | str = "inf" if math.isinf(load.request_rate) else load.request_rate
    return {
        "num_prompts": workload.num_prompts,
        "input_len": workload.input_len,
        "output_len": workload.output_len,
        "request_rate": rate,
        "burstiness": load.burstiness,
        "max_concurrency": load.max_concurrency,
        "seed": workload.seed,
    }


def _details(outcomes: list[_Outcome], start: float) -> dict[str, list[Any]]:
    return {
        "ttfts": [o.ttft for o in outcomes],
        "itls": [o.itl for o in outcomes],
        "latencies": [o.latency for o in outcomes],
        "start_times": [o.sent - start for o in outcomes],
        "send_lags": [o.send_lag for o in outcomes],
        "output_lens": [o.output_tokens if not o.error else 0 for o in outcomes],
        "errors": [o.error for o in outcomes],
    }


def spread(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each numeric metric's min, median and max over `runs` (results of `measure` at one point)."""
    keys = [k for k, v in runs[0].items() if k not in SETUP_KEYS and _number(v)]
    out = {}
    for key in keys:
        values = [run[key] for run in runs if _number(run.get(key))]
        out[key] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    return out


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


async def sweep(
    base_url: str,
    model: str,
    workload: Workload,
    *,
    api_key: str | None = None,
    timeout: float = 600.0,
    goodput: dict[str, float] | None = None,
    runs: int = 3,
    max_concurrency_cap: int = 64,
    min_gain: float = 0.10,
    warmups: int = 1,
    progress: Callable[[SweepProgress], None] | None = None,
) -> dict[str, Any]:
    """All-at-once points at concurrency 1, 2, 4, ... (`runs` each) until the median output throughput gains
    less than `min_gain` over the point before, or the cap (or num_prompts) is reached. Each run draws its own
    prompts (seeds `workload.seed`, +1, +2, ...), so that no run is served from another's prefix cache.

    Returns {"points": [{"max_concurrency", "runs": [results], "spread": spread(runs)}], "best_max_concurrency",
    "speedup"}: speedup is the median output throughput at the best concurrency over that at concurrency 1.
    """
    if runs < 1 or max_concurrency_cap < 1:
        raise ValueError(f"runs ({runs}) and max_concurrency_cap ({max_concurrency_cap}) must be at least 1")
    cap = min(max_concurrency_cap, workload.num_prompts)
    steps = [2**i for i in range(int(math.log2(cap)) + 1)]
    points: list[dict[str, Any]] = []
    started = time.monotonic()
    last_run: float | None = None  # seconds the last run took
    for index, concurrency in enumerate(steps):
        results = []
        for run in range(runs):
            if progress:
                runs_left = (runs - run) + (len(steps) - index - 1) * runs
                left = None if last_run is None else runs_left * last_run
                progress(SweepProgress(index + 1, concurrency, run + 1, runs, time.monotonic() - started, left))
            run_started = time.monotonic()
            load = Load(max_concurrency=concurrency)
            fresh = replace(workload, seed=workload.seed + index * runs + run)
            results.append(
                await measure(
                    base_url, model, fresh, load, api_key=api_key, timeout=timeout, goodput=goodput, warmups=warmups
                )
            )
            last_run = time.monotonic() - run_started
        points.append({"max_concurrency": concurrency, "runs": results, "spread": spread(results)})
        if len(points) > 1 and _throughput(points[-1]) < _throughput(points[-2]) * (1 + min_gain):
            break
    best = max(points, key=_throughput)
    base = _throughput(points[0])
    return {
        "points": points,
        "best_max_concurrency": best["max_concurrency"],
        "speedup": _throughput(best) / base if base else None,
    }


def _throughput(point: dict[str, Any]) -> float:
    return float(point["spread"]["output_throughput"]["median"])


_TABLE = (
    ("completed", "completed", "{:.0f}"),
    ("failed", "failed", "{:.0f}"),
    ("total_input_tokens", "input tokens", "{:.0f}"),
    ("total_output_tokens", "output tokens", "{:.0f}"),
    ("duration", "duration (s)", "{:.2f}"),
    ("request_throughput", "requests/s", "{:.2f}"),
    ("request_goodput", "good requests/s", "{:.2f}"),
    ("output_throughput", "output tokens/s", "{:.1f}"),
    ("total_token_throughput", "total tokens/s", "{:.1f}"),
    *((f"{stat}_{m}_ms", f"{stat} {m.upper()} (ms)", "{:.2f}") for m in METRICS for stat in ("median", "p99")),
    ("mean_send_lag_ms", "mean send lag (ms)", "{:.2f}"),
    ("max_send_lag_ms", "max send lag (ms)", "{:.2f}"),
)


def format_point(runs: list[dict[str, Any]]) -> str:
    """One point's table: the value, or min / median / max over several runs."""
    stats = spread(runs)
    lines = [f"{'metric':24} " + ("value" if len(runs) == 1 else "min / median / max")]
    for key, label, fmt in _TABLE:
        if key in stats:
            s = stats[key]
            cells = [s["median"]] if len(runs) == 1 else [s["min"], s["median"], s["max"]]
            lines.append(f"{label:24} " + " / ".join(fmt.format(c) for c in cells))
    if error := next((run["first_error"] for run in runs if run["first_error"]), None):
        lines.append(f"first error: {error}")
    return "\n".join(lines)


def format_sweep(summary: dict[str, Any]) -> str:
    """The sweep's table: one row a point, medians over its runs (output throughput with its range)."""
    lines = [
        f"{'concurrency':>11} {'output tok/s (min-max)':>24} {'median TTFT':>11} {'median TPOT':>11} "
        f"{'p99 E2EL':>9} {'max lag':>8} {'failed':>6}"
    ]
    for point in summary["points"]:
        s = point["spread"]
        tput = s["output_throughput"]
        lines.append(
            f"{point['max_concurrency']:>11} {tput['median']:>9.1f} ({tput['min']:.1f}-{tput['max']:.1f})".ljust(37)
            + f"{s['median_ttft_ms']['median']:>10.1f} {s['median_tpot_ms']['median']:>11.2f} "
            f"{s['p99_e2el_ms']['median']:>9.1f} {s['max_send_lag_ms']['max']:>8.2f} {s['failed']['max']:>6.0f}"
        )
    speedup = summary["speedup"]
    lines.append(
        f"best concurrency {summary['best_max_concurrency']}: "
        + (f"{speedup:.2f}x the output throughput of concurrency 1" if speedup else "no throughput at concurrency 1")
    )
    return "\n".join(lines)


def _stderr(step: SweepProgress) -> None:
    print(step, file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pytest_vllm.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, help="the served model name")
    parser.add_argument("--api-key", help="sent as a bearer token (default: $VLLM_API_KEY)")
    parser.add_argument("--input-len", type=int, default=Workload.input_len)
    parser.add_argument("--output-len", type=int, default=Workload.output_len)
    parser.add_argument("--num-prompts", type=int, default=Workload.num_prompts)
    parser.add_argument("--seed", type=int, default=Workload.seed)
    parser.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    parser.add_argument("--no-stream", action="store_true", help="ask for whole answers (only E2EL is measured)")
    parser.add_argument("--max-concurrency", type=int)
    parser.add_argument("--request-rate", type=float, default=math.inf)
    parser.add_argument("--burstiness", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--warmups", type=int, default=1)
    parser.add_argument("--sweep", action="store_true", help="concurrency 1, 2, 4, ... until throughput stops growing")
    parser.add_argument("--sweep-cap", type=int, default=64)
    parser.add_argument("--goodput", nargs="+", default=[], metavar="NAME:MS", help="SLOs, e.g. ttft:500 tpot:50")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    api_key = args.api_key or os.environ.get("VLLM_API_KEY")
    workload = Workload(args.input_len, args.output_len, args.num_prompts, args.seed, not args.no_stream, args.chat)
    goodput = parse_goodput(args.goodput)
    common: dict[str, Any] = {"api_key": api_key, "timeout": args.timeout, "goodput": goodput, "warmups": args.warmups}
    output: Any
    try:
        if args.sweep:
            cap = args.sweep_cap
            output = asyncio.run(
                sweep(
                    args.url, args.model, workload, runs=args.runs, max_concurrency_cap=cap, progress=_stderr, **common
                )
            )
            print(format_sweep(output))
        else:
            load = Load(args.max_concurrency, args.request_rate, args.burstiness)
            output = [asyncio.run(measure(args.url, args.model, workload, load, **common)) for _ in range(args.runs)]
            print(format_point(output))
    except PerfError as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        setup = {"workload": asdict(workload), "goodput": goodput}
        args.json.write_text(json.dumps({**setup, "results": output}, indent=1))


if __name__ == "__main__":
    main()
