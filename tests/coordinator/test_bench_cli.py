"""`partition bench`: the metrics table, every stage and link beside its prediction, JSON and a timeline."""

import json
import subprocess
import sys

import pytest

from partition.artifacts import save_plan
from tests.coordinator.plans import split_plan, with_edge_only_baseline


def test_bench_reports_metrics_and_predicted_vs_measured(smollm2, tmp_path):
    plan = split_plan(
        smollm2, [("phone", 0, 10, "fp16"), ("server-a", 10, 25, "raw"), ("phone", 25, 32, "raw")]
    )
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    out_json, plot = tmp_path / "bench.json", tmp_path / "timeline.png"
    result = subprocess.run(
        [sys.executable, "-m", "partition", "bench", "--plan", str(path), "--spawn-local", "--threads", "1",
         "--requests", "2", "--prompt-tokens", "16", "--new-tokens", "6", "--json", str(out_json),
         "--plot", str(plot), "--slo-ttft", "1e-6", "--slo-tpot", "10"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for needle in ("TTFT (ms)", "TPOT (ms)", "fluidity-index", "phone -> server-a", "predicted ms"):
        assert needle in result.stdout, result.stdout
    # a TTFT of a microsecond is met by no request
    assert "0% meet the SLOs (TTFT <= 0.001 ms, TPOT <= 10000 ms)" in result.stdout, result.stdout
    report = json.loads(out_json.read_text())
    assert report["metrics"]["n_requests"] == 2
    assert report["metrics"]["goodput_requests_per_s"] == 0 and report["metrics"]["slo"]["ttft_s"] == 1e-6
    names = [row["name"] for row in report["predicted_vs_measured"]]
    assert names[:2] == ["TTFT after open", "TPOT"]
    assert "stage server-a [10,25)" in names
    assert {"link phone -> server-a", "link server-a -> phone"} <= set(names)
    rows = {row["name"]: row for row in report["predicted_vs_measured"]}
    outside = rows.pop("phone outside spans")  # the coordinator's own time per token: measured only
    assert outside["predicted_s"] is None and outside["error"] is None
    assert abs(outside["measured_s"]) < rows["TPOT"]["measured_s"]
    opening = rows.pop("session open")  # measured only; the metrics' TTFT includes it, as REFERENCES says
    assert opening["predicted_s"] is None and opening["measured_s"] > 0
    assert report["metrics"]["ttft_s"]["p50"] > rows["TTFT after open"]["measured_s"]
    for row in rows.values():
        assert row["measured_s"] > 0 and row["predicted_s"] is not None
    assert plot.stat().st_size > 10_000  # a real PNG was drawn
    # The run's workload is not the plan's: the comparison says so, and how to predict this one.
    caveat = "prompt-tokens 16 (plan: 32), new-tokens 6 (plan: 48)"
    assert f"note: the plan predicts its own workload, and this run differs: {caveat}" in result.stdout
    assert (
        caveat in report["prediction_caveat"]
        and "--prompt-tokens 16 --new-tokens 6" in report["prediction_caveat"]
    )
    assert report["baseline"] is None and report["base_plan_id"] == report["plan_id"] == plan.plan_id
    # Nor does the plan predict this prompt's first token: no deadline for it, so no fluidity-index.
    why = "the plan predicts the first token for 32 prompt tokens and 1 session(s), this run sends 16 and 1"
    assert f"note: no fluidity-index: {why}; give --ttft-deadline for one" in result.stdout
    assert report["metrics"]["fluidity_index"] is None and report["metrics"]["ttft_deadline_s"] is None


def test_the_caveat_names_only_what_differs_from_the_plans_workload(smollm2):
    from partition.coordinator.bench import workload_caveat

    plan = split_plan(smollm2, [("phone", 0, 32, "raw")])  # made for 32 prompt tokens, 48 new, 1 session
    assert workload_caveat(plan, 32, 48, 1) is None
    caveat = workload_caveat(plan, 32, 48, 4)
    assert "sessions 4 (plan: 1)" in caveat and "prompt" not in caveat and "--sessions 4" in caveat
    assert "batched" not in caveat


def test_the_caveat_says_a_plan_for_several_sessions_predicts_more_batching_than_the_run_does(smollm2):
    from dataclasses import replace

    from partition.coordinator.bench import workload_caveat

    plan = split_plan(smollm2, [("phone", 0, 32, "raw")])
    plan = replace(plan, workload=replace(plan.workload, sessions=4))
    caveat = workload_caveat(plan, 32, 48, 4)  # the plan's own workload, yet not what it measures
    assert caveat is not None and "differs" not in caveat
    assert "predicts its 4 sessions' prompts and decode steps as one batch each" in caveat


def test_bench_refuses_an_slo_it_cannot_judge(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "partition", "bench", "--plan", str(tmp_path / "plan.json"), "--slo-fluidity", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        "--slo-fluidity is a fraction above 0 and at most 1 (every request meets 0), got 2" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_a_fluidity_objective_without_a_first_token_deadline_is_refused_before_deploying(smollm2, tmp_path):
    save_plan(with_edge_only_baseline(smollm2), tmp_path / "plan.json")
    result = subprocess.run(
        [sys.executable, "-m", "partition", "bench", "--plan", str(tmp_path / "plan.json"), "--prompt-tokens",
         "8", "--slo-fluidity", "0.5", "--json", str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (
        "--slo-fluidity needs a first-token deadline: the plan predicts the first token for 32"
        in result.stderr
    )
    assert "give --ttft-deadline" in result.stderr and not (tmp_path / "b.json").exists()


def test_bench_of_a_baseline_says_it_is_one(smollm2, tmp_path):
    plan = with_edge_only_baseline(smollm2)
    save_plan(plan, tmp_path / "plan.json")
    result = subprocess.run(
        [sys.executable, "-m", "partition", "bench", "--plan", str(tmp_path / "plan.json"), "--baseline",
         "edge_only", "--threads", "1", "--requests", "1", "--warmup", "0", "--json", str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"baseline 'edge_only' of plan {plan.plan_id} epoch 1:"), result.stdout
    assert "note:" not in result.stdout  # the plan's own workload: its predictions apply
    report = json.loads((tmp_path / "b.json").read_text())
    # ... and its prediction of the first token, plus Etalon's 0.3 s of slack, is the deadline walked
    predicted_ttft = next(b.predicted.ttft_s for b in plan.baselines if b.name == "edge_only")
    deadlines = report["metrics"]["ttft_deadline_s"], report["metrics"]["tbt_deadline_s"]
    assert deadlines == (pytest.approx(predicted_ttft + 0.3), 0.03)
    said = f"fluidity-index deadlines: first token {deadlines[0] * 1e3:.1f} ms, each later token 30.0 ms"
    assert said in result.stdout and 0 <= report["metrics"]["fluidity_index"]["p50"] <= 1
    assert report["baseline"] == "edge_only" and report["base_plan_id"] == plan.plan_id != report["plan_id"]
    assert report["stages"] == [["phone", 0, 32, "raw"]]
