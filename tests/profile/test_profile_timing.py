import time

import pytest

from partition.profile.timing import time_call


def test_warmup_runs_are_not_timed_and_repeats_are():
    calls = []
    timing = time_call(lambda: calls.append(1), repeats=5, warmup=3)
    assert len(calls) == 8 and timing.repeats == 5
    assert 0 <= timing.p10_s <= timing.median_s <= timing.p90_s


def test_min_time_batches_back_to_back_calls_and_divides():
    calls = []

    def sleep_1ms():
        calls.append(1)
        time.sleep(0.001)

    timing = time_call(sleep_1ms, repeats=2, warmup=0, min_time_s=0.02)
    assert len(calls) >= 2 * 2  # each sample kept calling until 20 ms had passed
    assert 0.001 <= timing.median_s <= 0.02


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        time_call(lambda: None, repeats=0, warmup=1)
