import pytest

from partition.profile import timing as timing_module
from partition.profile.timing import time_call, time_calls


class FakeClock:
    """Stands in for the `time` module timing.py reads: the clock moves only when a call `sleep`s, so
    the samples are exactly what the calls took, however busy the host running the tests is."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing_module, "time", fake)
    return fake


def test_warmup_runs_are_not_timed_and_repeats_are():
    calls = []
    timing = time_call(lambda: calls.append(1), repeats=5, warmup=3)
    assert len(calls) == 8 and timing.repeats == 5
    assert 0 <= timing.p10_s <= timing.median_s <= timing.p90_s


def test_min_time_batches_back_to_back_calls_and_divides(clock):
    calls = []

    def sleep_1ms():
        calls.append(1)
        clock.sleep(0.001)

    timing = time_call(sleep_1ms, repeats=2, warmup=0, min_time_s=0.02)
    assert len(calls) >= 2 * 20  # each sample kept calling until 20 ms had passed
    assert timing.median_s == pytest.approx(0.001, rel=0.05)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        time_call(lambda: None, repeats=0, warmup=1)


def test_several_points_take_their_samples_in_turn():
    order = []
    timings = time_calls([lambda: order.append("a"), lambda: order.append("b")], repeats=3, warmup=1)
    assert order == ["a", "b"] + ["a", "b"] * 3  # warm-up, then one sample of each in turn
    assert [t.repeats for t in timings] == [3, 3]


def test_a_slow_moment_costs_each_point_one_sample_not_one_point_all(clock):
    """The host is slow for two samples in a row: taken in turn, each point's median stays fast."""
    slow_calls = {2, 3}  # the 2nd and 3rd timed calls (one after the other: b, then a)
    count = [0]

    def call():
        count[0] += 1
        clock.sleep(0.02 if count[0] in slow_calls else 0.001)

    fast, also_fast = time_calls([call, call], repeats=3, warmup=0)
    assert fast.median_s == pytest.approx(0.001) and also_fast.median_s == pytest.approx(0.001)
