import numpy as np
import pytest

from partition.metrics import Distribution, RequestTiming, Slo, percentile, request_metrics, summarize_run


def test_request_metrics_by_hand():
    # Arrival 0; tokens at .5, .6, .83, .85.
    timing = RequestTiming(0.0, (0.5, 0.6, 0.83, 0.85))
    m = request_metrics(timing, ttft_deadline_s=0.25, tbt_deadline_s=0.1)
    assert m.n_tokens == 4
    assert m.ttft_s == 0.5
    assert m.tbt_s == pytest.approx((0.1, 0.23, 0.02))
    assert m.tpot_s == pytest.approx(0.35 / 3)  # first token excluded
    assert m.normalized_latency_s == pytest.approx(0.85 / 4)
    assert m.e2e_s == 0.85
    assert m.tbt.max == pytest.approx(0.23) and m.tbt.p50 == pytest.approx(0.1)
    # Deadline walk: .5 > .25 misses floor(.25/.1)+1 = 3; .1 hits; .23 misses floor(.13/.1)+1 = 2;
    # .02 hits: 5 missed of 7.
    assert m.fluidity_index == pytest.approx(2 / 7)


def test_single_token_request_has_no_tpot():
    m = request_metrics(RequestTiming(1.0, (1.2,)), ttft_deadline_s=0.3)
    assert m.ttft_s == pytest.approx(0.2) and m.tpot_s is None and m.tbt is None and m.tbt_s == ()
    assert m.normalized_latency_s == pytest.approx(0.2) and m.fluidity_index == 1.0


def test_timing_is_checked_and_gaps_round_trip():
    with pytest.raises(ValueError, match="back in time"):
        RequestTiming(1.0, (0.5,))
    with pytest.raises(ValueError, match="back in time"):
        RequestTiming(0.0, (0.5, 0.4))
    for times in [(0.1, float("nan"), 0.3), (0.1, float("inf"))]:  # NaN compares as never going back
        with pytest.raises(ValueError, match="must be finite seconds"):
            RequestTiming(0.0, times)
    timing = RequestTiming.from_gaps(2.0, [0.25, 0.02, 0.02])
    assert timing.token_times_s == pytest.approx((2.25, 2.27, 2.29))
    assert timing.inter_token_times == pytest.approx((0.25, 0.02, 0.02))
    with pytest.raises(ValueError, match="no tokens"):
        request_metrics(RequestTiming(0.0, ()), 0.3)


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(q):
    values = [0.3, 0.01, 0.2, 0.2, 0.05, 1.5, 0.07]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_distribution_by_hand():
    d = Distribution.of([1.0, 2.0, 3.0, 4.0])
    assert (d.n, d.mean, d.p50, d.max) == (4, 2.5, 2.5, 4.0)
    assert d.p90 == pytest.approx(3.7) and d.p99 == pytest.approx(3.97)


def test_run_summary_throughput_and_goodput():
    fast = RequestTiming(0.0, (0.2, 0.22, 0.24, 0.26))  # ttft .2, tpot .02
    slow = RequestTiming(0.1, (0.9, 1.0, 1.1))  # ttft .8, tpot .1
    single = RequestTiming(0.5, (0.7,))  # one token
    run = summarize_run(
        [fast, slow, single], ttft_deadline_s=0.3, tbt_deadline_s=0.03, slo=Slo(ttft_s=0.5, tpot_s=0.05)
    )
    assert run.n_requests == 3
    assert run.duration_s == pytest.approx(1.1)
    assert run.throughput_tokens_per_s == pytest.approx(8 / 1.1)
    assert run.throughput_requests_per_s == pytest.approx(3 / 1.1)
    # fast meets both; slow misses TTFT and TPOT; single's TTFT is met, and it has no later token to be
    # late, so no TPOT to miss.
    assert run.goodput_requests_per_s == pytest.approx(2 / 1.1)
    assert run.slo_attainment == pytest.approx(2 / 3)
    assert run.ttft_s.p50 == pytest.approx(0.2) and run.ttft_s.max == pytest.approx(0.8)
    assert run.tpot_s.n == 2 and run.tpot_s.mean == pytest.approx((0.02 + 0.1) / 2)
    assert run.tbt_s.n == 5
    assert run.fluidity_index.n == 3
    # Steady requests: the smallest deadlines are their gaps (.02 and .1); 1 / p99 of them.
    p99 = 0.02 + (0.1 - 0.02) * 0.99
    assert run.fluid_token_rate == pytest.approx(1 / p99, rel=1e-3)


def test_slo_objectives():
    # TTFT .27 banks .03 s of slack: the first .05 gap hits (slack .01), the second misses 1 deadline.
    m = request_metrics(RequestTiming(0.0, (0.27, 0.32, 0.37)), ttft_deadline_s=0.3, tbt_deadline_s=0.03)
    assert m.fluidity_index == pytest.approx(2 / 3)
    assert Slo().met_by(m)
    assert Slo(ttft_s=0.27, tpot_s=0.051, tbt_p99_s=0.051, fluidity_index=0.6).met_by(m)
    assert not Slo(ttft_s=0.26).met_by(m)
    assert not Slo(tpot_s=0.049).met_by(m)
    assert not Slo(tbt_p99_s=0.049).met_by(m)
    assert not Slo(fluidity_index=1.0).met_by(m)
    one = request_metrics(RequestTiming(0.0, (0.2,)), ttft_deadline_s=0.3)  # a single token: no decode
    assert Slo(ttft_s=0.25, tpot_s=0.001, tbt_p99_s=0.001).met_by(one) and not Slo(ttft_s=0.1).met_by(one)


@pytest.mark.parametrize(
    ("objectives", "message"),
    [
        ({"ttft_s": 0.0}, "ttft_s is in seconds and must be above 0"),
        ({"fluidity_index": 1.5}, "above 0 and at most 1"),
        ({"fluidity_index": 0.0}, r"above 0 and at most 1 \(every request meets 0\)"),
    ],
)
def test_an_slo_no_request_can_be_judged_by_is_refused(objectives, message):
    with pytest.raises(ValueError, match=message):
        Slo(**objectives)
