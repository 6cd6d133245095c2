"""`partition serve` checks each device's memory again for the KV cache it will allocate: the plan was
made for its own workload, and --max-context x --max-sessions may ask for far more."""

import subprocess
import sys

from partition.artifacts import save_plan
from partition.plan import load_cluster
from partition.plan.validate import serving_problem
from tests.coordinator.plans import profiled_cluster, split_plan

STAGES = [("phone", 0, 24, "raw"), ("server-a", 24, 32, "raw")]  # 7 blocks and the head on server-a
TIGHT_GB = 0.25  # its weights (0.21 GB) and the plan's KV (80 tokens, 1 session) fit; 4 x 2048 tokens do not


def test_a_device_that_holds_the_plans_sessions_but_not_the_served_ones_is_named(smollm2, tmp_path):
    cluster = load_cluster(profiled_cluster(smollm2, tmp_path, {}, {"server-a": TIGHT_GB}))
    plan = split_plan(smollm2, STAGES)
    w = plan.workload
    assert serving_problem(cluster, plan.stages, w.kv_tokens, w.sessions) == ""
    problem = serving_problem(cluster, plan.stages, 2048, 4)
    assert problem.startswith("server-a needs ") and f"but offers {TIGHT_GB:.2f} GB" in problem
    assert problem.endswith("serving 4 session(s) of 2048 tokens")


def test_serve_refuses_before_any_worker_starts_and_says_what_fits(smollm2, tmp_path):
    cluster = profiled_cluster(smollm2, tmp_path, {"server-a": "127.0.0.1:9"}, {"server-a": TIGHT_GB})
    plan = split_plan(smollm2, STAGES)
    save_plan(plan, tmp_path / "plan.json")
    result = subprocess.run(
        [sys.executable, "-m", "partition", "serve", "--plan", str(tmp_path / "plan.json"), "--cluster",
         str(cluster), "--prompt", "Hello"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "server-a needs" in result.stderr and "serving 4 session(s) of 2048 tokens" in result.stderr
    assert "serve with --max-context 80 --max-sessions 1" in result.stderr
