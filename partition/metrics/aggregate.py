"""Metrics across the requests of one run (metrics): distributions, throughput, goodput, fluid token rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from partition.metrics.fluidity import ETALON_TBT_DEADLINE_S
from partition.metrics.latency import RequestMetrics, RequestTiming, request_metrics
from partition.metrics.stats import Distribution, percentile


@dataclass(frozen=True)
class Slo:
    """Service-level objectives a request must all meet to count toward goodput (None: no objective)."""

    ttft_s: float | None = None  # TTFT at most this, seconds
    tpot_s: float | None = None  # TPOT at most this, seconds
    tbt_p99_s: float | None = None  # the request's p99 TBT at most this, seconds
    fluidity_index: float | None = None  # fluidity-index at least this (with the run's deadlines)

    def __post_init__(self) -> None:
        # An objective no request can be judged by (a time of 0 or less, a fluidity outside (0, 1]) is a
        # mistake, not an objective: it would make goodput 0 or every request count.
        for name in ("ttft_s", "tpot_s", "tbt_p99_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} is in seconds and must be above 0, got {value:g}")
        if self.fluidity_index is not None and not 0 < self.fluidity_index <= 1:
            raise ValueError(
                f"fluidity_index is a fraction above 0 and at most 1 (every request meets 0), "
                f"got {self.fluidity_index:g}"
            )

    def met_by(self, request: RequestMetrics) -> bool:
        """Whether `request` meets every objective; one of a single token has no later tokens, so no
        TPOT or TBT to miss (as vLLM's benchmark counts it)."""
        checks = [
            self.ttft_s is None or request.ttft_s <= self.ttft_s,
            self.tpot_s is None or request.tpot_s is None or request.tpot_s <= self.tpot_s,
            self.tbt_p99_s is None or request.tbt is None or request.tbt.p99 <= self.tbt_p99_s,
            self.fluidity_index is None
            or (request.fluidity_index is not None and request.fluidity_index >= self.fluidity_index),
        ]
        return all(checks)

    def given(self) -> bool:
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.tbt_p99_s, self.fluidity_index))

    def describe(self) -> str:
        """'TTFT <= 500 ms, TPOT <= 80 ms', or 'none' when no objective is set."""
        parts = [
            f"{name} <= {value * 1e3:g} ms"
            for name, value in (("TTFT", self.ttft_s), ("TPOT", self.tpot_s), ("TBT p99", self.tbt_p99_s))
            if value is not None
        ]
        if self.fluidity_index is not None:
            parts.append(f"fluidity-index >= {self.fluidity_index:g}")
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class RunMetrics:
    n_requests: int
    duration_s: float  # first arrival to last token, seconds
    ttft_s: Distribution  # over requests
    tpot_s: Distribution | None  # over requests with >= 2 tokens
    tbt_s: Distribution | None  # over every gap of every request
    normalized_latency_s: Distribution  # over requests
    fluidity_index: Distribution | None  # over requests; None without a first-token deadline
    fluid_token_rate: float | None  # tokens/s: 1 / p99 over requests of the smallest 10 %-miss D_d
    throughput_tokens_per_s: float  # generated tokens / duration
    throughput_requests_per_s: float  # requests / duration
    goodput_requests_per_s: float  # requests meeting every SLO / duration
    slo_attainment: float  # fraction of requests meeting every SLO
    slo: Slo = Slo()  # the objectives goodput counts (none given: every request counts)
    # The deadlines the fluidity-index walked, seconds: D_p for the first token (None: not given, and no
    # fluidity-index), D_d for each later one.
    ttft_deadline_s: float | None = None
    tbt_deadline_s: float = ETALON_TBT_DEADLINE_S


def summarize_run(
    timings: Sequence[RequestTiming],
    ttft_deadline_s: float | None,
    tbt_deadline_s: float,
    slo: Slo | None = None,
) -> RunMetrics:
    """Aggregate the requests of one run (all timings on one clock); the fluidity-index only with a
    first-token deadline, and a fluidity objective needs one."""
    if not timings:
        raise ValueError("a run with no requests has no metrics")
    slo = slo or Slo()
    if ttft_deadline_s is None and slo.fluidity_index is not None:
        raise ValueError("a fluidity-index objective needs a first-token deadline")
    requests = [request_metrics(t, ttft_deadline_s, tbt_deadline_s) for t in timings]
    start = min(t.arrival_s for t in timings)
    end = max(t.token_times_s[-1] for t in timings)
    duration = end - start
    multi = [r for r in requests if r.tpot_s is not None]
    deadlines = [r.min_tbt_deadline_s for r in multi if r.min_tbt_deadline_s is not None]
    all_tbt = [gap for r in requests for gap in r.tbt_s]
    good = sum(slo.met_by(r) for r in requests)

    def rate(count: float) -> float:
        return count / duration if duration > 0 else float("inf")

    return RunMetrics(
        n_requests=len(requests),
        duration_s=duration,
        ttft_s=Distribution.of([r.ttft_s for r in requests]),
        tpot_s=Distribution.of([r.tpot_s for r in multi]) if multi else None,
        tbt_s=Distribution.of(all_tbt) if all_tbt else None,
        normalized_latency_s=Distribution.of([r.normalized_latency_s for r in requests]),
        fluidity_index=None
        if ttft_deadline_s is None
        else Distribution.of([r.fluidity_index for r in requests]),
        fluid_token_rate=1.0 / percentile(deadlines, 99) if deadlines else None,
        throughput_tokens_per_s=rate(sum(r.n_tokens for r in requests)),
        throughput_requests_per_s=rate(len(requests)),
        goodput_requests_per_s=rate(good),
        slo=slo,
        slo_attainment=good / len(requests),
        ttft_deadline_s=ttft_deadline_s,
        tbt_deadline_s=tbt_deadline_s,
    )
