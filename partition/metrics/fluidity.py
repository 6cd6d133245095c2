"""Etalon's deadline walk (metrics): fluidity-index and fluid token generation rate.

Source: Agrawal et al., "Etalon: Holistic Performance Evaluation Framework for LLM Inference Systems"
(arXiv 2407.07000), as defined in REFERENCES.md. Token i has a deadline D (D_p for the first, D_d for
the rest). Time saved on early tokens carries over as slack without a cap; a late token misses every
D_d-period deadline it overran, and the deadlines restart from it (slack back to 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ETALON_TTFT_SLACK_S = 0.3  # Etalon's default scheduling slack on top of a predicted prefill time
ETALON_TBT_DEADLINE_S = 0.03  # Etalon's default deadline between tokens
FLUID_MISS_RATE = 0.1  # the miss rate that defines the fluid token generation rate
FLUID_STEP_S = 1e-4  # resolution of the smallest deadline search
# Gaps are differences of float timestamps: one that is on its deadline comes out a few ulps over or
# under it (0.03 as 0.030000000000000027). A nanosecond, finer than any clock that timed them, decides.
TIME_TOLERANCE_S = 1e-9


@dataclass(frozen=True)
class DeadlineCount:
    missed: int  # deadlines missed
    total: int  # deadlines counted (met + missed)

    @property
    def miss_rate(self) -> float:
        return self.missed / self.total if self.total else 0.0


def deadline_walk(
    inter_token_times: Sequence[float],
    ttft_deadline_s: float,
    tbt_deadline_s: float,
    ignore_first: bool = False,
) -> DeadlineCount:
    """Count met and missed deadlines. `inter_token_times[0]` is the TTFT, the rest the TBTs (seconds)."""
    # finer than the tolerance, a deadline cannot be timed (and a late token's misses overflow)
    if not (math.isfinite(tbt_deadline_s) and tbt_deadline_s >= TIME_TOLERANCE_S):
        raise ValueError(
            f"the TBT deadline must be at least {TIME_TOLERANCE_S:g} s and finite, got {tbt_deadline_s}"
        )
    if not (math.isfinite(ttft_deadline_s) and ttft_deadline_s >= 0):
        raise ValueError(f"the TTFT deadline must be 0 s or more and finite, got {ttft_deadline_s}")
    missed = total = 0
    slack = 0.0  # seconds saved so far, since the last miss
    for i, gap in enumerate(inter_token_times):
        if i == 0 and ignore_first:
            continue
        deadline = ttft_deadline_s if i == 0 else tbt_deadline_s
        late_s = gap - slack - deadline
        if late_s <= TIME_TOLERANCE_S:
            slack += deadline - gap
            total += 1
            continue
        misses = math.floor((late_s + TIME_TOLERANCE_S) / tbt_deadline_s) + 1
        missed += misses
        total += misses
        slack = 0.0
    return DeadlineCount(missed, total)


def fluidity_index(
    inter_token_times: Sequence[float], ttft_deadline_s: float, tbt_deadline_s: float
) -> float:
    """1 - missed / total deadlines over a request's tokens; 1.0 for a request with no tokens."""
    count = deadline_walk(inter_token_times, ttft_deadline_s, tbt_deadline_s)
    return 1.0 - count.miss_rate


def min_tbt_deadline(
    tbt_s: Sequence[float], miss_rate: float = FLUID_MISS_RATE, step_s: float = FLUID_STEP_S
) -> float:
    """The smallest D_d (a multiple of `step_s`) whose miss rate over the TBTs is <= `miss_rate`.

    The first token is ignored, as in Etalon. Binary search over multiples of the step, assuming (as
    Etalon does) that a longer deadline never misses more often; at D_d = max(TBT) nothing misses.
    """
    if not tbt_s:
        raise ValueError("a request needs at least two tokens to have a TBT deadline")
    gaps = [0.0, *tbt_s]  # a placeholder first token, ignored
    low, high = 1, max(1, math.ceil(max(tbt_s) / step_s))
    while low < high:
        middle = (low + high) // 2
        if deadline_walk(gaps, 0.0, middle * step_s, ignore_first=True).miss_rate <= miss_rate:
            high = middle
        else:
            low = middle + 1
    return low * step_s
