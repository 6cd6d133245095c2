import pytest

from partition.metrics import RequestTiming, summarize_run
from partition.metrics.aggregate import Slo
from partition.metrics.report import Comparison, comparison_table, hop_table, run_table
from partition.metrics.spans import LinkSummary, StageSummary


def test_run_table_shows_every_metric_in_ms():
    run = summarize_run([RequestTiming(0.0, (0.2, 0.22, 0.24))], ttft_deadline_s=0.3, tbt_deadline_s=0.03)
    text = run_table(run)
    ttft = next(line for line in text.splitlines() if line.startswith("TTFT"))
    assert ttft.split()[-5:] == ["200.00"] * 5
    tpot = next(line for line in text.splitlines() if line.startswith("TPOT"))
    assert tpot.split()[-1] == "20.00"
    assert "fluidity-index" in text and "1.000" in text
    assert "throughput 12.5 tokens/s" in text  # 3 tokens in 0.24 s
    assert "fluid token generation rate 50.0 tokens/s" in text
    assert "goodput: no SLO given" in text  # not "100% meet the SLOs" of objectives nobody set


def test_run_table_names_the_slos_goodput_counts():
    timings = [RequestTiming(0.0, (0.2, 0.22, 0.24)), RequestTiming(0.0, (0.6, 0.62))]
    run = summarize_run(timings, 0.3, 0.03, Slo(ttft_s=0.5, fluidity_index=0.9))
    assert "goodput 1.61 requests/s: 50% meet the SLOs (TTFT <= 500 ms, fluidity-index >= 0.9)" in run_table(
        run
    )


def test_hop_table_lists_stages_and_links():
    stages = [
        StageSummary(
            hop=1,
            device="server-a",
            n_messages=5,
            compute_p50_s=0.004,
            compute_p99_s=0.006,
            queue_p50_s=0.0001,
        )
    ]
    links = [LinkSummary("edge", "server-a", "int8", 5, 0.0102, 0.0119, 0.0100, 612.0)]
    text = hop_table(links, stages)
    assert "1: server-a" in text and "4.00" in text and "6.00" in text
    assert "edge -> server-a" in text and "10.20" in text and "612" in text and "int8" in text


def test_comparison_error_sign_and_missing_prediction():
    optimistic = Comparison("TPOT", predicted_s=0.09, measured_s=0.1)
    assert optimistic.error == pytest.approx(-0.1)
    assert Comparison("hop", None, 0.1).error is None
    text = comparison_table([optimistic, Comparison("hop", None, 0.1)])
    assert "-10.0%" in text and "90.00" in text and "100.00" in text
