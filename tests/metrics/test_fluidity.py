"""The deadline walk against REFERENCES.md's worked cases and hand-computed ones."""

import math
import re

import pytest

from partition.metrics import deadline_walk, fluidity_index, min_tbt_deadline
from partition.metrics.fluidity import DeadlineCount

D_P, D_D = 0.3, 0.03


def test_worked_case_with_slack():
    # 0.25 hits (slack .05), .02 and .02 hit (slack .07), .15 > .10 misses floor(.05/.03)+1 = 2 deadlines,
    # .03 hits with the slack reset: 2 missed of 6.
    gaps = [0.25, 0.02, 0.02, 0.15, 0.03]
    assert deadline_walk(gaps, D_P, D_D) == DeadlineCount(missed=2, total=6)
    assert fluidity_index(gaps, D_P, D_D) == pytest.approx(1 - 2 / 6)
    assert round(fluidity_index(gaps, D_P, D_D), 3) == 0.667


def test_worked_case_late_first_token():
    # 0.5 s against 0.3 s misses floor(.2/.03)+1 = 7 deadlines; nine on-time tokens follow: 7 of 16.
    gaps = [0.5] + [0.03] * 9
    assert deadline_walk(gaps, D_P, D_D) == DeadlineCount(missed=7, total=16)
    assert fluidity_index(gaps, D_P, D_D) == pytest.approx(0.5625)


def test_misses_after_a_late_first_token_and_no_slack_carried_over():
    # .35: 2 missed, slack 0; .01 hits (slack .02); .10 > .05: floor((.10-.02-.03)/.03)+1 = 2 missed.
    gaps = [0.35, 0.01, 0.10]
    assert deadline_walk(gaps, D_P, D_D) == DeadlineCount(missed=4, total=5)
    assert fluidity_index(gaps, D_P, D_D) == pytest.approx(0.2)


def test_slack_has_no_cap():
    # A fast first token banks 0.29 s, enough to absorb a 0.3 s stall later.
    assert deadline_walk([0.01, 0.30, 0.03], D_P, D_D) == DeadlineCount(missed=0, total=3)


def test_all_on_time_and_empty():
    assert fluidity_index([0.1] + [0.03] * 20, D_P, D_D) == 1.0
    assert fluidity_index([], D_P, D_D) == 1.0


def test_ignore_first_token():
    assert deadline_walk([9.0, 0.02, 0.02], D_P, D_D, ignore_first=True) == DeadlineCount(missed=0, total=2)


@pytest.mark.parametrize(
    ("ttft_deadline", "tbt_deadline", "says"),
    [
        (D_P, 0.0, "the TBT deadline must be at least 1e-09 s and finite, got 0.0"),
        (D_P, 1e-320, "the TBT deadline must be at least 1e-09 s"),  # a late token's misses: infinite
        (D_P, math.nan, "the TBT deadline must be at least 1e-09 s and finite, got nan"),
        (-1.0, D_D, "the TTFT deadline must be 0 s or more and finite, got -1.0"),
        (math.nan, D_D, "the TTFT deadline must be 0 s or more and finite, got nan"),
    ],
)
def test_a_deadline_no_token_can_be_judged_by_is_refused(ttft_deadline, tbt_deadline, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        deadline_walk([0.4, 0.02], ttft_deadline, tbt_deadline)


def test_min_tbt_deadline_hand_case():
    # Nine 20 ms gaps then a 200 ms stall. With D the slack before the stall is 9(D - .02) and the stall
    # misses m = floor(.38/D - 10) + 1 deadlines of 9 + m; m <= 1 (10 % of 10) needs D > .38/11 = .034545..
    tbt = [0.02] * 9 + [0.2]
    assert min_tbt_deadline(tbt) == pytest.approx(0.0346)
    gaps = [0.0, *tbt]
    assert deadline_walk(gaps, 0.0, 0.0346, ignore_first=True).miss_rate <= 0.1
    assert deadline_walk(gaps, 0.0, 0.0345, ignore_first=True).miss_rate > 0.1


def test_min_tbt_deadline_of_steady_tokens_is_their_gap():
    assert min_tbt_deadline([0.05] * 10) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="two tokens"):
        min_tbt_deadline([])


def test_worked_cases_from_recorded_timestamps_score_gaps_on_their_deadline_as_met():
    """Gaps taken from timestamps are off by a few ulps (0.03 becomes 0.030000000000000027): a token on
    its deadline is still met, and a miss on an exact multiple of D_d still counts its last deadline."""
    from partition.metrics import RequestTiming, request_metrics

    slack_case = RequestTiming.from_gaps(0.0, [0.25, 0.02, 0.02, 0.15, 0.03])
    assert slack_case.inter_token_times[-1] != 0.03  # what the walk is given
    assert request_metrics(slack_case, 0.3, 0.03).fluidity_index == pytest.approx(1 - 2 / 6)
    millisecond_trace = RequestTiming(0.0, tuple(ms / 1000 for ms in range(500, 771, 30)))
    assert request_metrics(millisecond_trace, 0.3, 0.03).fluidity_index == pytest.approx(1 - 7 / 16)
    assert deadline_walk([0.57], 0.3, 0.03).missed == 10  # floor((0.57 - 0.3) / 0.03) + 1
