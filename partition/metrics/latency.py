"""Per-request latency metrics (metrics), exactly as defined in REFERENCES.md.

t0 = request arrival, t_i = when token i reached the client (i = 1..N), all on one clock in seconds.
TTFT = t_1 - t0; TBT = [t_i - t_{i-1}, i >= 2]; TPOT = (t_N - t_1) / (N - 1), the first token
excluded (vLLM, GenAI-Perf); normalized latency = (t_N - t0) / N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from partition.metrics.fluidity import ETALON_TBT_DEADLINE_S, fluidity_index, min_tbt_deadline
from partition.metrics.stats import Distribution


@dataclass(frozen=True)
class RequestTiming:
    """When one request arrived and when each of its tokens reached the client (seconds, one clock)."""

    arrival_s: float  # t0
    token_times_s: tuple[float, ...]  # t_1 .. t_N
    prompt_tokens: int = 0  # tokens in the prompt (for reports; not used in the formulas)

    def __post_init__(self) -> None:
        times = (self.arrival_s, *self.token_times_s)
        if not all(math.isfinite(t) for t in times):
            raise ValueError(f"arrival and token times must be finite seconds, got {times}")
        if any(later < earlier for earlier, later in zip(times, times[1:], strict=False)):
            raise ValueError("token times must not go back in time or precede the arrival")

    @staticmethod
    def from_gaps(arrival_s: float, inter_token_times: Sequence[float]) -> RequestTiming:
        """Build from TTFT and TBTs (the fluidity-index input) instead of absolute times."""
        times, now = [], arrival_s
        for gap in inter_token_times:
            now += gap
            times.append(now)
        return RequestTiming(arrival_s, tuple(times))

    @property
    def n_tokens(self) -> int:
        return len(self.token_times_s)

    @property
    def inter_token_times(self) -> tuple[float, ...]:
        """[TTFT, TBT_2, .., TBT_N]: the gaps Etalon's deadline walk takes."""
        times = (self.arrival_s, *self.token_times_s)
        return tuple(later - earlier for earlier, later in zip(times, times[1:], strict=False))


@dataclass(frozen=True)
class RequestMetrics:
    n_tokens: int  # tokens generated (N)
    ttft_s: float  # seconds
    tbt_s: tuple[float, ...]  # seconds, N - 1 gaps
    tbt: Distribution | None  # of tbt_s; None when N < 2
    tpot_s: float | None  # seconds per output token after the first; None when N < 2
    normalized_latency_s: float  # seconds per token, whole request
    e2e_s: float  # t_N - t0, seconds
    fluidity_index: float | None  # 0..1, for the deadlines given to request_metrics; None without D_p
    min_tbt_deadline_s: float | None  # smallest D_d with <= 10 % misses (fluid token rate input)


def request_metrics(
    timing: RequestTiming, ttft_deadline_s: float | None, tbt_deadline_s: float = ETALON_TBT_DEADLINE_S
) -> RequestMetrics:
    """All per-request metrics of one finished request (at least one token); its fluidity-index only
    with a first-token deadline (None: the caller has no prediction of this request's prefill)."""
    if timing.n_tokens == 0:
        raise ValueError("a request with no tokens has no latency metrics")
    first, last = timing.token_times_s[0], timing.token_times_s[-1]
    gaps = timing.inter_token_times
    tbt_s = gaps[1:]
    many = timing.n_tokens >= 2
    return RequestMetrics(
        n_tokens=timing.n_tokens,
        ttft_s=first - timing.arrival_s,
        tbt_s=tbt_s,
        tbt=Distribution.of(tbt_s) if many else None,
        tpot_s=(last - first) / (timing.n_tokens - 1) if many else None,
        normalized_latency_s=(last - timing.arrival_s) / timing.n_tokens,
        e2e_s=last - timing.arrival_s,
        fluidity_index=None
        if ttft_deadline_s is None
        else fluidity_index(gaps, ttft_deadline_s, tbt_deadline_s),
        min_tbt_deadline_s=min_tbt_deadline(tbt_s) if many else None,
    )
