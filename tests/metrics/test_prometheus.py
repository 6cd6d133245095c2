"""The Prometheus text exposition of GET /metrics, against hand-written expected text."""

import math

import pytest

from partition.metrics.prometheus import Counter, Gauge, Histogram, Info, render


def test_a_histogram_renders_cumulative_buckets_sum_and_count_per_label_set():
    h = Histogram("t_seconds", "Times.", (0.1, 0.5, 1.0), ("link",))
    for value in (0.05, 0.1, 0.3, 2.0):  # 0.1 falls in le="0.1": bounds are inclusive
        h.observe(value, link="a")
    h.observe(0.7, link="b")
    h.observe(math.nan, link="b")  # a request of one token has no TPOT: nothing recorded
    assert render([h]) == (
        "# HELP t_seconds Times.\n"
        "# TYPE t_seconds histogram\n"
        't_seconds_bucket{link="a",le="0.1"} 2\n'
        't_seconds_bucket{link="a",le="0.5"} 3\n'
        't_seconds_bucket{link="a",le="1"} 3\n'
        't_seconds_bucket{link="a",le="+Inf"} 4\n'
        't_seconds_sum{link="a"} 2.45\n'
        't_seconds_count{link="a"} 4\n'
        't_seconds_bucket{link="b",le="0.1"} 0\n'
        't_seconds_bucket{link="b",le="0.5"} 0\n'
        't_seconds_bucket{link="b",le="1"} 1\n'
        't_seconds_bucket{link="b",le="+Inf"} 1\n'
        't_seconds_sum{link="b"} 0.7\n'
        't_seconds_count{link="b"} 1\n'
    )
    assert h.count(link="a") == 4 and h.count(link="c") == 0


def test_counters_gauges_and_info_render_with_escaped_labels():
    requests = Counter("r_total", "Requests.", ("outcome",))
    requests.inc(outcome="ok")
    requests.inc(2, outcome="ok")
    requests.inc(outcome='say "hi"\\\n')
    tokens = Counter("tok_total", "Tokens.")  # no labels: 0 before anything happened
    running = Gauge("running", "Now.", lambda: 3)
    info = Info("plan_info", "Plan.", lambda: {"plan_id": "abc", "epoch": "2"})
    assert render([requests, tokens, running, info]).splitlines() == [
        "# HELP r_total Requests.",
        "# TYPE r_total counter",
        'r_total{outcome="ok"} 3',
        'r_total{outcome="say \\"hi\\"\\\\\\n"} 1',
        "# HELP tok_total Tokens.",
        "# TYPE tok_total counter",
        "tok_total 0",
        "# HELP running Now.",
        "# TYPE running gauge",
        "running 3",
        "# HELP plan_info Plan.",
        "# TYPE plan_info gauge",
        'plan_info{plan_id="abc",epoch="2"} 1',
    ]
    assert requests.value(outcome="ok") == 3


def test_misuse_is_refused_with_the_metric_named():
    requests = Counter("r_total", "Requests.", ("outcome",))
    with pytest.raises(ValueError, match="r_total takes labels"):
        requests.inc(code="ok")
    with pytest.raises(ValueError, match="only goes up"):
        requests.inc(-1, outcome="ok")
    with pytest.raises(ValueError, match="increasing"):
        Histogram("h", "H.", (1.0, 0.5))
