"""The performance gate: a sweep's figures (perf.sweep) against a baseline's, point by point.

A gated metric is worse than the baseline's when its median over the point's runs is worse by more than the
tolerance, a ratio: the one given (--vllm-perf-tolerance), else one drawn from the noise both sides measured,
`1 + NOISE_FACTOR x` the larger relative range (max/min - 1) of the metric over the point's runs, and at least
`MIN_TOLERANCE`. Latencies are worse higher, throughputs lower. Points are matched by concurrency; one the
baseline lacks is not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The gated metrics, and whether more is better.
GATED = {
    "median_ttft_ms": False,
    "median_tpot_ms": False,
    "median_itl_ms": False,
    "median_e2el_ms": False,
    "output_throughput": True,
    "request_throughput": True,
}
NOISE_FACTOR = 2.0
MIN_TOLERANCE = 1.10


@dataclass(frozen=True)
class Regression:
    metric: str
    concurrency: int
    before: float
    now: float
    ratio: float  # how many times worse
    tolerance: float

    def __str__(self) -> str:
        return (
            f"{self.metric} at concurrency {self.concurrency}: {self.before:.4g} → {self.now:.4g}, "
            f"{self.ratio:.2f}x worse than the baseline (tolerance {self.tolerance:.2f})"
        )


def tolerance(metric: str, before: dict[str, Any], now: dict[str, Any]) -> float:
    """The noise-drawn tolerance of `metric` at one point: from its spread over the runs of both sides."""
    noise = max(_relative_range(side["spread"][metric]) for side in (before, now))
    return max(MIN_TOLERANCE, 1 + NOISE_FACTOR * noise)


def regressions(before: dict[str, Any], now: dict[str, Any], given: float | None = None) -> list[Regression]:
    """Every gated metric of sweep `now` worse than in sweep `before` beyond its tolerance (`given`, else drawn
    from the noise)."""
    baseline = {point["max_concurrency"]: point for point in before["points"]}
    found = []
    for point in now["points"]:
        old = baseline.get(point["max_concurrency"])
        if old is None:
            continue
        for metric, more_is_better in GATED.items():
            was, is_ = old["spread"][metric]["median"], point["spread"][metric]["median"]
            if not (was > 0 and is_ > 0):
                continue  # nothing measured (a metric of one-token answers, a point where all failed)
            ratio = was / is_ if more_is_better else is_ / was
            allowed = given or tolerance(metric, old, point)
            if ratio > allowed:
                found.append(Regression(metric, point["max_concurrency"], was, is_, ratio, allowed))
    return found


def _relative_range(spread: dict[str, float]) -> float:
    return spread["max"] / spread["min"] - 1 if spread["min"] > 0 else 0.0
