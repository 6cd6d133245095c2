"""Clock offset between the coordinator and each worker (serve -> metrics), NTP style.

Each Probe round trip gives t0 (coordinator sends), t1 (worker receives), t2 (worker replies),
t3 (coordinator receives), stamps in Unix ns on each side's own clock. For one sample
(RFC 5905, section 8):
    offset = ((t1 - t0) + (t2 - t3)) / 2      worker clock minus coordinator clock
    delay  = (t3 - t0) - (t2 - t1)            round-trip time on the wire
The samples with the smallest delay were queued least, so their offsets are the most trustworthy:
we take the median offset of the fastest quarter. Each sample's offset is within its delay / 2 of
the truth, so the estimate is within half the largest delay of the samples used. A sample whose delay
comes out negative (the worker counted more time between its stamps than the whole round trip took
here) saw a clock stepped or slewed while it ran: it says nothing, and would otherwise rank fastest.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ClockEstimate:
    offset_ns: int  # worker clock - coordinator clock, ns
    delay_ns: int  # round trip of the samples used, median, ns
    error_bound_ns: int  # |true offset - estimate| is at most this (half the largest round trip used), ns
    samples: int  # probes used

    def to_local_ns(self, worker_stamp_ns: int) -> int:
        """A worker's timestamp expressed on the coordinator's clock."""
        return worker_stamp_ns - self.offset_ns

    @staticmethod
    def identity() -> ClockEstimate:
        """Same machine, same clock."""
        return ClockEstimate(0, 0, 0, 0)


def estimate_offset(samples: Sequence[tuple[int, int, int, int]]) -> ClockEstimate:
    """Estimate from (t0, t1, t2, t3) samples; at least one with a delay of 0 or more is needed."""
    if not samples:
        raise ValueError("clock offset needs at least one probe sample")
    measured = []
    for t0, t1, t2, t3 in samples:
        delay = (t3 - t0) - (t2 - t1)
        offset = ((t1 - t0) + (t2 - t3)) / 2
        if delay >= 0:
            measured.append((delay, offset))
    if not measured:
        raise ValueError(
            f"all {len(samples)} probes took longer between the worker's stamps than their whole round trip: "
            "a clock was stepped while probing"
        )
    measured.sort()
    best = measured[: max(1, len(measured) // 4)]
    return ClockEstimate(
        offset_ns=round(statistics.median(o for _, o in best)),
        delay_ns=round(statistics.median(d for d, _ in best)),
        error_bound_ns=best[-1][0] // 2,
        samples=len(samples),
    )
