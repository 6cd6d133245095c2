"""The NTP-style clock offset (coordinator/clock.py) and the error bound it claims."""

import pytest

from partition.coordinator.clock import estimate_offset

OFFSET_NS = 7_000  # the worker's clock runs this far ahead of the coordinator's


def probe(t0: int, out_ns: int, back_ns: int, service_ns: int = 1_000) -> tuple[int, int, int, int]:
    """(t0, t1, t2, t3) of one round trip taking `out_ns` there and `back_ns` back."""
    t1 = t0 + out_ns + OFFSET_NS
    t2 = t1 + service_ns
    return t0, t1, t2, t2 - OFFSET_NS + back_ns


def test_symmetric_round_trips_give_the_offset_exactly():
    estimate = estimate_offset([probe(i * 10**6, 300, 300) for i in range(8)])
    assert estimate.offset_ns == OFFSET_NS and estimate.delay_ns == 600 and estimate.samples == 8


def test_a_probe_with_a_negative_delay_is_left_out():
    """The worker's clock jumped 1.25 ms while it held one probe: that probe's round trip comes out
    negative and, kept, would rank fastest and move the estimate out of its own bound."""
    jumped = probe(0, 300, 300, service_ns=1_000)
    jumped = (jumped[0], jumped[1], jumped[2] + 2_500, jumped[3])  # the reply stamped 2.5 us later
    samples = [jumped] + [probe(i * 10**6, 300, 300) for i in range(1, 8)]
    estimate = estimate_offset(samples)
    assert estimate.offset_ns == OFFSET_NS and estimate.error_bound_ns == 300 and estimate.samples == 8
    with pytest.raises(ValueError, match="all 1 probes took longer between the worker's stamps"):
        estimate_offset([jumped])


def test_the_error_bound_holds_for_the_samples_the_estimate_uses():
    """The fastest probe's delay is all on the way back, the next three all on the way out: the median
    of the fastest quarter is off by 100 ns, which half the smallest round trip (50 ns) does not cover."""
    samples = [probe(0, 0, 100)] + [probe(i * 10**6, 200, 0) for i in range(1, 4)]
    samples += [probe(i * 10**6, 5_000, 5_000) for i in range(4, 16)]
    estimate = estimate_offset(samples)
    assert abs(estimate.offset_ns - OFFSET_NS) == 100
    assert abs(estimate.offset_ns - OFFSET_NS) <= estimate.error_bound_ns == 100
