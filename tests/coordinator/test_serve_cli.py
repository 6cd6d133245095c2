"""`partition serve` as a user runs it: a plan file, workers started locally, the chat question."""

import json
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from partition.artifacts import load_plan, save_plan
from tests.coordinator.plans import (
    profiled_cluster,
    served_by_one_worker,
    split_plan,
    with_edge_only_baseline,
)


def test_serve_spawn_local_answers_paris_with_per_hop_metrics(smollm2, tmp_path):
    plan = split_plan(
        smollm2,
        [
            ("phone", 0, 9, "int8"),
            ("server-a", 9, 20, "fp16"),
            ("server-b", 20, 31, "raw"),
            ("phone", 31, 32, "raw"),
        ],
    )
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    result = subprocess.run(
        [sys.executable, "-m", "partition", "serve", "--plan", str(path), "--spawn-local", "--threads", "1",
         "--chat", "--prompt", "What is the capital of France?", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith('{"plan_id"')  # what readers of job logs look for (tests/ray)
    out = json.loads(result.stdout)
    assert "Paris" in out["text"]
    assert out["plan_id"] == plan.plan_id and out["epoch"] == 1
    assert out["metrics"]["ttft_s"] > 0 and out["metrics"]["tpot_s"] > 0
    assert len(out["metrics"]["tbt_s"]) == len(out["token_ids"]) - 1
    hops = [(h["from"], h["to"], h["codec"]) for h in out["hops"]]
    assert hops == [
        ("phone", "server-a", "int8"),
        ("server-a", "server-b", "fp16"),
        ("server-b", "phone", "raw"),
    ]
    for hop in out["hops"]:
        assert 0 < hop["latency_p50_s"] <= hop["latency_p99_s"] < 1.0
        assert hop["bytes_per_token"] > 0
    # int8 blockwise carries ~1.06 bytes per value, fp16 2, raw 4 (hidden 576)
    per_token = {h["codec"]: h["bytes_per_token"] for h in out["hops"]}
    assert per_token["int8"] < per_token["fp16"] < per_token["raw"]
    assert out["hops_of"] == "decode steps"


def test_serve_and_generate_write_the_same_log_probabilities(smollm2, tmp_path):
    """The head on a worker, which sends back only its top 64 logits: serve's --logprobs are still the
    whole model's, as `generate --logprobs` writes them."""
    path = tmp_path / "plan.json"
    save_plan(split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")]), path)
    asked = ["--prompt", "The capital of France is", "--max-new-tokens", "6", "--json", "--logprobs", "3"]
    outputs = []
    for command in (["serve", "--plan", str(path), "--spawn-local"], ["generate"]):
        result = subprocess.run(
            [sys.executable, "-m", "partition", *command, "--threads", "1", *asked],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(json.loads(result.stdout))
    served, generated = outputs
    assert served["token_ids"] == generated["token_ids"] and len(served["token_ids"]) == 6
    for ours, theirs in zip(served["logprobs"]["content"], generated["logprobs"]["content"], strict=True):
        assert ours["bytes"] == theirs["bytes"] and len(ours["top_logprobs"]) == 3
        assert ours["logprob"] == pytest.approx(theirs["logprob"], abs=1e-4) and ours["logprob"] < 0
        assert [t["logprob"] for t in ours["top_logprobs"]] == pytest.approx(
            [t["logprob"] for t in theirs["top_logprobs"]], abs=1e-4
        )
    assert "".join(t["token"] for t in served["logprobs"]["content"]) == served["text"]


def test_an_answer_of_one_token_reports_the_hops_of_its_prompt(smollm2, tmp_path):
    save_plan(
        split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")]), tmp_path / "p.json"
    )
    result = subprocess.run(
        [sys.executable, "-m", "partition", "serve", "--plan", str(tmp_path / "p.json"), "--spawn-local",
         "--threads", "1", "--prompt", "Once upon a time", "--max-new-tokens", "1", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert len(out["token_ids"]) == 1 and out["hops_of"] == "the prompt's step"
    assert [(h["from"], h["to"], h["codec"]) for h in out["hops"]] == [
        ("phone", "server-a", "raw"),
        ("server-a", "phone", "top-k"),
    ]
    assert all(h["latency_p50_s"] > 0 for h in out["hops"])
    assert [s["device"] for s in out["stages"]] == ["phone", "server-a"]


@pytest.mark.parametrize(
    ("sampling", "said"),
    [
        (["--temperature", "0.8", "--seed", "3"], "add --top-k 64"),
        (["--presence-penalty", "-0.5"], "a penalty that raises a token (presence or frequency below 0"),
        (["--repetition-penalty", "0.9"], "a penalty that raises a token (presence or frequency below 0"),
    ],
    ids=["temperature", "negative-penalty", "repetition-below-1"],
)
def test_serve_says_what_a_sampler_that_needs_every_logit_costs_when_a_worker_holds_the_head(
    smollm2, tmp_path, sampling, said
):
    plan = split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    result = subprocess.run(
        [sys.executable, "-m", "partition", "serve", "--plan", str(path), "--spawn-local", "--threads", "1",
         "--prompt", "Once upon a time", *sampling, "--max-new-tokens", "6", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "needs every logit" in result.stderr and said in result.stderr
    back = json.loads(result.stdout)["hops"][-1]
    assert (back["from"], back["to"], back["codec"]) == ("server-a", "phone", "raw")
    assert back["bytes_per_token"] == 4 * smollm2.spec.vocab_size  # every logit came back, as the note says


def test_a_worker_dying_mid_answer_is_named_with_what_to_do(smollm2, tmp_path):
    from partition.transport.local import spawn_worker

    worker = spawn_worker("server-a", extra_args=("--threads", "1"))
    try:
        _, plan_file, cluster = served_by_one_worker(smollm2, tmp_path, worker.address)
        serve = subprocess.Popen(
            [sys.executable, "-m", "partition", "serve", "--plan", str(plan_file), "--cluster",
             str(cluster), "--threads", "1", "--prompt", "Once upon a time", "--max-new-tokens", "2000",
             "--reconnect-wait", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        first = serve.stdout.read(1)  # the answer has started streaming
        assert first, serve.stderr.read()[-3000:]
        worker.process.kill()
        out, err = serve.communicate(timeout=120)
    finally:
        worker.stop()
    assert serve.returncode != 0
    assert (first + out).endswith("\n")  # the streamed line is ended before the error
    assert "Traceback" not in err, err[-3000:]
    assert f"server-a at {worker.address}: UNAVAILABLE" in err, err[-3000:]
    assert "no answer within 3 s" in err  # waited for as long as --reconnect-wait said
    assert "start it again" in err and "send the prompt again" in err


def test_serve_of_a_baseline_says_which_and_of_which_plan(smollm2, tmp_path):
    plan = with_edge_only_baseline(smollm2)
    save_plan(plan, tmp_path / "plan.json")
    result = subprocess.run(
        [sys.executable, "-m", "partition", "serve", "--plan", str(tmp_path / "plan.json"), "--baseline",
         "edge_only", "--threads", "1", "--prompt", "Once upon a time", "--max-new-tokens", "4", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["baseline"] == "edge_only" and out["base_plan_id"] == plan.plan_id != out["plan_id"]
    assert out["hops"] == [] and len(out["token_ids"]) == 4  # the whole model on the edge


def test_serve_started_with_a_worker_away_plans_around_it_and_answers_in_strict_json(smollm2, tmp_path):
    """With the profiled cluster file, a server that does not answer when serve starts is planned
    around before the first token; one token's answer has no TPOT, written as null (strict JSON)."""
    from partition.transport.local import spawn_workers, stop_workers

    started = spawn_workers(["server-a", "server-b"], extra_args=("--threads", "1"))
    workers = {worker.name: worker for worker in started}
    try:
        addresses = {name: worker.address for name, worker in workers.items()}
        cluster = profiled_cluster(smollm2, tmp_path, addresses, dict.fromkeys(addresses, 8.0))
        stages = [("phone", 0, 16, "raw"), ("server-a", 16, 24, "raw"), ("server-b", 24, 32, "raw")]
        save_plan(replace(split_plan(smollm2, stages), codecs=("raw",)), tmp_path / "plan.json")
        workers["server-b"].stop()
        result = subprocess.run(
            [sys.executable, "-m", "partition", "serve", "--plan", str(tmp_path / "plan.json"), "--cluster",
             str(cluster), "--threads", "1", "--prompt", "Once upon a time", "--max-new-tokens", "1", "--json"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        stop_workers(list(workers.values()))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "planned without server-b" in result.stderr, result.stderr[-3000:]
    out = json.loads(result.stdout, parse_constant=lambda constant: pytest.fail(f"{constant} is not JSON"))
    around = load_plan(tmp_path / "plan.epoch2.json")
    assert (out["epoch"], out["plan_id"]) == (2, around.plan_id) and len(out["token_ids"]) == 1
    assert {stage.device for stage in around.stages} == {"phone", "server-a"}
    assert out["metrics"]["tpot_s"] is None and out["metrics"]["ttft_s"] > 0


def test_serve_says_when_the_session_ends_the_answer_before_max_new_tokens(smollm2, tmp_path):
    save_plan(split_plan(smollm2, [("phone", 0, 32, "raw")]), tmp_path / "plan.json")
    result = subprocess.run(
        [sys.executable, "-m", "partition", "serve", "--plan", str(tmp_path / "plan.json"), "--threads", "1",
         "--prompt", "Once upon a time", "--max-new-tokens", "20", "--max-context", "10", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    prompt = len(out["prompt_token_ids"])
    assert len(out["token_ids"]) == 10 - prompt and out["finish_reason"] == "length"
    assert (
        f"note: a session (--max-context) holds 10 tokens: after the prompt's {prompt}, the answer stops "
        f"at {10 - prompt} new tokens, not --max-new-tokens 20"
    ) in result.stderr, result.stderr[-3000:]


def test_spawn_local_workers_may_hold_the_sessions_serve_asks_for(smollm2, tmp_path):
    """8 sessions of 8192 tokens need 1440 MiB of KV cache on server-a's 15 blocks, past a worker's
    default budget of 1024 MiB: the workers serve starts itself are given what it asks of them."""
    save_plan(
        split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")]), tmp_path / "p.json"
    )
    result = subprocess.run(
        [sys.executable, "-m", "partition", "serve", "--plan", str(tmp_path / "p.json"), "--spawn-local",
         "--threads", "1", "--max-sessions", "8", "--max-context", "8192", "--prompt", "Once upon a time",
         "--max-new-tokens", "2", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(json.loads(result.stdout)["token_ids"]) == 2


def test_spawn_local_names_a_port_held_by_a_program_that_is_no_worker(smollm2, tmp_path):
    save_plan(
        split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")]), tmp_path / "p.json"
    )
    with socket.socket() as taken:  # listens, accepts, never speaks gRPC
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        cluster = tmp_path / "cluster.toml"
        cluster.write_text(f'[[device]]\nname = "server-a"\nrole = "server"\naddress = "{address}"\n')
        result = subprocess.run(
            [sys.executable, "-m", "partition", "serve", "--plan", str(tmp_path / "p.json"), "--cluster",
             str(cluster), "--spawn-local", "--threads", "1", "--prompt", "Hi", "--max-new-tokens", "1"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (
        f"device 'server-a': something listens at {address} but takes no gRPC connection (another program "
        "holds the port"
    ) in result.stderr
