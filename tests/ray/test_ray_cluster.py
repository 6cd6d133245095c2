"""`partition serve --ray` on a simulated three-node Ray cluster (ray.cluster_utils.Cluster).

The nodes are real raylets on this machine, each advertising one device: device:phone on the head
(where the coordinator, the edge, runs), device:server-a and device:server-b on two more. One cluster
serves the whole module: the exact tokens of the whole model with every actor on its device's node,
a device nobody advertises, a segment an actor cannot load, a stage actor killed (started again where
it was) and a node lost mid-request.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import tomllib

import pytest

from partition.artifacts import save_plan
from partition.coordinator.workers import is_listening
from partition.model.generation import GenerationRequest, generate, local_step
from partition.transport.client import STEP_TIMEOUT_S
from tests.coordinator.plans import split_plan
from tests.ray.helpers import (
    NODE_OBJECT_STORE_BYTES,
    Output,
    partition,
    stage_actors,
    stop_process,
    wait_gone,
)

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")
pytestmark = pytest.mark.ray

DEVICES = ("phone", "server-a", "server-b")  # phone: the head node and the edge
# three stages, one per device: the edge embeds and runs the first blocks, server-b ends with the head
STAGES = [("phone", 0, 10, "raw"), ("server-a", 10, 21, "shuffle-zstd"), ("server-b", 21, 32, "raw")]
N_TOKENS = 32
STORY = "Tell me a long story about a lighthouse keeper and the sea."
# serve --reconnect-wait where a lost stage stays away (its node is gone): one reconnect attempt tells
# so; the default, long enough for a supervisor's restart, is tested in tests/coordinator/test_resume.py
STAYS_AWAY_S = 3.0


def _node_args(device: str) -> dict:
    return {
        "num_cpus": 1,
        "resources": {f"device:{device}": 1},
        "object_store_memory": NODE_OBJECT_STORE_BYTES,
        "include_dashboard": False,
        "dashboard_agent_listen_port": None,  # any free port, not Ray's fixed default
    }


@pytest.fixture(scope="module")
def cluster(ray_env):
    started = time.monotonic()
    cluster, nodes = _start_cluster()
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        print(f"cluster of {len(nodes)} nodes up in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()  # asserts that no process of any node is left
    assert not any(node.any_processes_alive() for node in nodes)


START_TRIES = 2  # Ray gives a node a fixed 30 s to register; a busy two-core host has missed it


def _start_cluster():
    """A head and a node per server device, all registered; on a failed start, the processes it left
    (children of this process that were not there before) are killed and it starts once more."""
    import psutil
    from ray.cluster_utils import Cluster

    attempt = 1
    while True:
        before = {child.pid for child in psutil.Process().children(recursive=True)}
        try:
            cluster = Cluster(initialize_head=True, head_node_args=_node_args("phone"), shutdown_at_exit=True)
            nodes = [cluster.head_node, *(cluster.add_node(**_node_args(d)) for d in DEVICES[1:])]
            cluster.wait_for_nodes()
            return cluster, nodes
        except Exception as error:  # Ray raises a bare Exception on a node that did not register
            left = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
            for child in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            psutil.wait_procs(left, timeout=20)
            if attempt == START_TRIES:
                raise
            print(f"the cluster did not start (try {attempt} of {START_TRIES}): {error}; starting again")
            attempt += 1


@pytest.fixture(scope="module")
def device_node_ids(cluster) -> dict[str, str]:
    """device -> id of the node advertising device:<device>."""
    return {
        key.removeprefix("device:"): node["NodeID"]
        for node in ray.nodes()
        if node["Alive"]
        for key in node["Resources"]
        if key.startswith("device:")
    }


@pytest.fixture(scope="module")
def plan_file(smollm2, tmp_path_factory):
    path = tmp_path_factory.mktemp("ray") / "plan.json"
    save_plan(split_plan(smollm2, STAGES), path)
    return path


def _serve(plan_file, address: str, env: dict, *extra: str) -> subprocess.Popen:
    command = partition(
        "serve", "--plan", str(plan_file), "--ray", address, "--threads", "1", "--max-context", "512",
        "--max-sessions", "1", "--chat", *extra,
    )  # fmt: skip
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


def _whole_model_tokens(model, prompt: list[int], n: int) -> list[int]:
    cache = model.new_cache(1, len(prompt) + n)
    request = GenerationRequest(prompt, max_new_tokens=n, context=len(prompt) + n)
    return generate(local_step(model, cache), request, eos_ids=(), decode=lambda ids: "").token_ids


def test_serve_ray_gives_the_whole_models_tokens_with_each_stage_on_its_device_node(
    cluster, device_node_ids, plan_file, smollm2_whole, ray_env
):
    started = time.monotonic()
    serve = _serve(plan_file, cluster.address, ray_env, "--json", "--max-new-tokens", str(N_TOKENS))
    stdout = Output(serve.stdout)
    stderr = Output(serve.stderr)
    try:
        serve.stdin.write(f"{STORY}\n".encode())
        serve.stdin.flush()
        assert stdout.wait_for(lambda text: text.endswith("\n"), timeout_s=240), (
            stderr.wait_for(lambda _: False, 1) or stderr.text[-3000:]
        )
        answered_s = time.monotonic() - started
        # still serving (waiting for the next prompt): the actors are up, each on its device's node
        actors = stage_actors()
        assert set(actors) == {"server-a", "server-b"}
        for device, info in actors.items():
            assert info["node_id"] == device_node_ids[device], f"{device} landed on the wrong node"
            assert is_listening(info["address"])
        serve.stdin.close()
        assert serve.wait(60) == 0, stderr.text[-3000:]
    finally:
        stop_process(serve)
    print(f"serve --ray answered in {answered_s:.1f} s")

    out = json.loads(stdout.text)
    reference = _whole_model_tokens(smollm2_whole, out["prompt_token_ids"], N_TOKENS)
    assert out["token_ids"] == reference[: len(out["token_ids"])]
    assert len(out["token_ids"]) == N_TOKENS or out["finish_reason"] == "eos"
    assert [(h["from"], h["to"]) for h in out["hops"]] == [("phone", "server-a"), ("server-a", "server-b"),
                                                           ("server-b", "phone")]  # fmt: skip

    # everything stops: no stage actor, no actor process, no port left behind
    assert wait_gone([info["pid"] for info in actors.values()]) == []
    assert stage_actors() == {}
    assert not any(is_listening(info["address"]) for info in actors.values())


def test_profile_ray_profiles_every_device_where_it_runs_and_plan_reads_it(cluster, ray_env, tmp_path):
    """`partition profile --ray`: a worker actor on each device's node profiles it; links actor to actor."""
    out = tmp_path / "cluster.toml"
    result = subprocess.run(
        partition(
            "profile", "--ray", cluster.address, "--model", "smollm2-135m", "--edge", "phone", "--out", str(out),
            "--prefill-lengths", "8", "32", "--context-lengths", "16", "64", "--repeats", "2",
        ),
        capture_output=True, text=True, timeout=600, env=ray_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = tomllib.loads(out.read_text())
    roles = {d["name"]: d["role"] for d in data["device"]}
    assert roles == {"phone": "edge", "server-a": "server", "server-b": "server"}
    # the file says how to measure again, and not the addresses of actors gone since
    command = f"partition profile --model smollm2-135m --ray {cluster.address} --edge phone"
    assert out.read_text().startswith(f"# Profiled by `{command}`")
    assert not any("address" in d for d in data["device"])
    for name in roles:
        profile = json.loads((tmp_path / f"{name}.json").read_text())
        assert profile["device"]["name"] == name  # measured by the actor on that device's node
    assert len(data["link"]) == 6  # three pairs, both directions
    plan = tmp_path / "plan.json"
    result = subprocess.run(
        partition("plan", "--model", "smollm2-135m", "--cluster", str(out), "--out", str(plan)),
        capture_output=True, text=True, timeout=120, env=ray_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(plan.read_text())["edge"] == "phone"
    assert stage_actors() == {}  # the profiling actors are gone


def test_a_device_no_node_advertises_fails_at_once_listing_the_clusters_devices(cluster, smollm2):
    from partition.ray.stages import RayStageError, ray_stages

    plan = split_plan(smollm2, [("phone", 0, 10, "raw"), ("server-z", 10, 32, "raw")])
    started = time.monotonic()
    with pytest.raises(RayStageError) as error, ray_stages(plan, cluster.address):
        pytest.fail("no stage actor can start for server-z")
    message = str(error.value)
    assert time.monotonic() - started < 10
    assert "device:server-z" in message
    assert "server-a" in message and "server-b" in message and "phone" in message  # what the cluster has
    assert stage_actors() == {}


def test_an_actor_ray_cannot_place_fails_after_the_start_timeout_naming_the_device(cluster, smollm2):
    from partition.ray.stages import RayStageError, ray_stages

    plan = split_plan(smollm2, STAGES)
    started = time.monotonic()
    # 2 threads ask for 2 CPUs; each simulated node has 1: Ray can never place the actors
    stages = ray_stages(plan, cluster.address, threads=2, start_timeout_s=3)
    with pytest.raises(RayStageError) as error, stages:
        pytest.fail("no node has 2 CPUs")
    assert time.monotonic() - started < 20
    message = str(error.value)
    assert "within 3 s" in message and "device:server-a" in message and "1 CPUs in all" in message, message
    assert stage_actors() == {}


def _named_actors(prefix: str, gone: bool = False, timeout_s: float = 10.0) -> list[str]:
    """Names of the actors in the cluster starting with `prefix`; with `gone`, after waiting up to
    `timeout_s` for there to be none (a kill takes a moment to show)."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = [
            e["name"] for e in ray.util.list_named_actors(all_namespaces=True) if e["name"].startswith(prefix)
        ]
        if not gone or not names or time.monotonic() > deadline:
            return names
        time.sleep(0.2)


def test_a_device_back_whose_actor_cannot_start_holds_only_the_look_that_launched_it(cluster, caplog):
    """serve --ray's look for a device planned around (revive) when the node advertising it has no CPU
    for the actor: the look that launches it waits `wait_s`, later looks neither wait for it nor launch
    another, and after `start_timeout_s` it is killed and the device gets no new actor for as long."""
    import logging

    from partition.ray.stages import ray_devices

    prefix = "partition-server-a-"
    timeout_s = 8.0
    # 2 threads ask for 2 CPUs and server-a's node has 1: neither the spare nor a new actor can start
    with ray_devices(
        [], "phone", "smollm2-135m", cluster.address, threads=2, start_timeout_s=2, spare=["server-a"]
    ) as stages:
        assert stages.placements == {} and _named_actors(prefix, gone=True) == []
        launched = time.monotonic()
        assert stages.revive({"server-a"}, wait_s=2.0, start_timeout_s=timeout_s) == {}
        (starting,) = _named_actors(prefix)
        looked = time.monotonic()
        assert stages.revive({"server-a"}, wait_s=60.0, start_timeout_s=timeout_s) == {}
        assert time.monotonic() - looked < 30, "a later look waited for the actor an earlier one launched"
        assert _named_actors(prefix) == [starting]
        time.sleep(max(0.0, launched + timeout_s + 0.5 - time.monotonic()))
        with caplog.at_level(logging.WARNING, logger="partition.ray.stages"):
            assert stages.revive({"server-a"}, wait_s=2.0, start_timeout_s=timeout_s) == {}
        assert "stage server-a is back in the cluster, but its actor did not start" in caplog.text
        assert _named_actors(prefix, gone=True) == []
        assert stages.revive({"server-a"}, wait_s=2.0, start_timeout_s=timeout_s) == {}
        assert _named_actors(prefix) == []  # not launched again before timeout_s has passed
    assert stage_actors() == {}


def test_an_actor_that_cannot_load_its_segment_names_its_device_and_node(cluster, smollm2):
    from partition.coordinator.deploy import deploy
    from partition.ray.stages import RayStageError, ray_stages

    # both stages remote, so the failure comes from the actors before this process loads anything
    plan = split_plan(smollm2, [("server-a", 0, 16, "raw"), ("server-b", 16, 32, "raw")])
    # a KV budget of 1 KiB cannot hold one session: LoadSegment fails on the stage actors
    stages_ = ray_stages(plan, cluster.address, kv_budget_bytes=1024, threads=1)
    with pytest.raises(RayStageError) as error, stages_ as stages:
        placements = dict(stages.placements)
        deploy(plan, stages.addresses, stages.transport, max_context=512, max_sessions=1)
    message = str(error.value)
    failed = [p for p in placements.values() if repr(p.device) in message]
    assert failed, message
    assert all(p.node_ip in message and p.node_id[:12] in message for p in failed), message
    assert "KV cache" in message
    assert wait_gone([p.pid for p in placements.values()]) == []
    assert stage_actors() == {}


def _two_answers_interrupted(
    serve: subprocess.Popen, interrupt, then=None
) -> tuple[Output, Output, dict, dict]:
    """Ask the story twice through `serve` (--json); a third of the way into the second answer (by the
    time the first one took), call `interrupt(actors)` with the stage actors of then. With `then`, call
    it after the second answer and ask a third time. Returns stdout, stderr, the actors of then and
    those after the last answer; serve has ended."""
    stdout = Output(serve.stdout)
    stderr = Output(serve.stderr)
    try:
        serve.stdin.write(f"{STORY}\n".encode())
        serve.stdin.flush()
        asked = time.monotonic()
        assert stdout.wait_for(lambda text: text.count("\n") >= 1, timeout_s=240), stderr.text[-3000:]
        answer_s = time.monotonic() - asked
        before = stage_actors()
        serve.stdin.write(f"{STORY}\n".encode())
        serve.stdin.flush()
        time.sleep(answer_s / 3)
        interrupt(before)
        assert stdout.wait_for(lambda text: text.count("\n") >= 2, timeout_s=240), (
            stderr.wait_for(lambda _: False, 1) or stderr.text[-3000:]
        )
        if then is not None:
            then()
            serve.stdin.write(f"{STORY}\n".encode())
            serve.stdin.flush()
            assert stdout.wait_for(lambda text: text.count("\n") >= 3, timeout_s=240), stderr.text[-3000:]
        after = stage_actors()
        serve.stdin.close()
        assert serve.wait(60) == 0, stderr.text[-3000:]
    finally:
        stop_process(serve)
    return stdout, stderr, before, after


def test_a_stage_actor_killed_mid_request_is_started_again_where_it_was_and_the_request_resumes(
    cluster, device_node_ids, plan_file, ray_env
):
    """The same story twice; during the second answer server-a's actor is killed. serve starts it again
    on server-a's node at the same address, reloads it, and the answer resumes to the first one's tokens."""

    def kill_server_a(actors: dict) -> None:
        victim = actors["server-a"]
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)

    serve = _serve(plan_file, cluster.address, ray_env, "--json", "--max-new-tokens", "200")
    stdout, stderr, before, after = _two_answers_interrupted(serve, kill_server_a)
    first, second = (json.loads(line) for line in stdout.text.splitlines())
    assert len(first["token_ids"]) >= 32, first["finish_reason"]  # long enough to be killed in
    assert second["resumes"] == 1, stderr.text[-3000:]  # killed mid-answer, and went on
    assert second["token_ids"] == first["token_ids"] and second["text"] == first["text"]
    victim, again = before["server-a"], after["server-a"]
    assert again["address"] == victim["address"] and again["node_id"] == device_node_ids["server-a"]
    assert again["pid"] != victim["pid"] and again["name"] != victim["name"]
    assert after["server-b"]["pid"] == before["server-b"]["pid"]  # the others are not touched
    assert stderr.wait_for(lambda text: "starting it again there" in text, timeout_s=5), stderr.text[-3000:]
    assert wait_gone([info["pid"] for info in (*before.values(), *after.values())]) == []
    assert stage_actors() == {}


def test_with_the_clusters_profiles_a_node_lost_mid_request_is_planned_around(
    cluster, smollm2, ray_env, tmp_path
):
    """serve --ray --cluster (profiles) of a plan on phone and server-a: server-b gets an idle stage
    actor. server-a's node dies during the second answer; its stage cannot start again, so the
    coordinator plans without server-a, server-b takes its layers, and the answer resumes to the first
    one's tokens. Then a node advertising server-a joins (a new node to Ray): at the next look the third
    request starts a stage actor there and is served by the first plan again, one epoch on."""
    from dataclasses import replace

    from tests.coordinator.plans import profiled_cluster

    recheck_s = 2.0  # serve --recheck: how long after the re-plan a request looks for server-a

    back = []

    def remove_server_a_node(actors: dict) -> None:
        assert set(actors) == {"server-a", "server-b"}  # server-b: idle, for a re-plan
        (node,) = [n for n in cluster.worker_nodes if n.node_id == actors["server-a"]["node_id"]]
        cluster.remove_node(node, allow_graceful=False)

    def add_a_server_a_node() -> None:
        back.append(cluster.add_node(**_node_args("server-a")))
        cluster.wait_for_nodes()
        time.sleep(recheck_s)  # the re-plan was at least this long ago: the next request looks

    profiles = profiled_cluster(smollm2, tmp_path, {}, {"server-a": 8.0, "server-b": 8.0})
    plan_path = tmp_path / "plan.json"
    on_server_a = [("phone", 0, 10, "raw"), ("server-a", 10, 32, "shuffle-zstd")]
    save_plan(replace(split_plan(smollm2, on_server_a), codecs=("raw", "shuffle-zstd")), plan_path)
    serve = _serve(
        plan_path, cluster.address, ray_env, "--cluster", str(profiles), "--json", "--max-new-tokens", "200",
        "--recheck", str(recheck_s), "--reconnect-wait", str(STAYS_AWAY_S),
    )  # fmt: skip
    try:
        stdout, stderr, before, after = _two_answers_interrupted(
            serve, remove_server_a_node, add_a_server_a_node
        )
    finally:
        if not back:  # the tests after this one need a server-a node
            cluster.add_node(**_node_args("server-a"))
            cluster.wait_for_nodes()
    # stdout holds the answers alone (the driver's print of the raylet's end goes to stderr)
    first, second, third = (json.loads(line) for line in stdout.text.splitlines())
    assert len(first["token_ids"]) >= 32, first["finish_reason"]
    assert second["resumes"] == 1 and second["epoch"] == 2, stderr.text[-3000:]
    assert second["token_ids"] == first["token_ids"] and second["text"] == first["text"]
    replanned = json.loads((tmp_path / "plan.epoch2.json").read_text())
    assert {stage["device"] for stage in replanned["stages"]} - {"phone"} == {"server-b"}
    replanned_log = "re-planned without server-a"
    assert stderr.wait_for(lambda text: replanned_log in text, timeout_s=5), stderr.text[-3000:]
    # taken back: a new actor on the new node, the first plan one epoch on, the same tokens
    assert third["epoch"] == 3 and third["resumes"] == 0, stderr.text[-3000:]
    assert third["token_ids"] == first["token_ids"]
    assert after["server-a"]["node_id"] == back[0].node_id != before["server-a"]["node_id"]
    taken_back = json.loads((tmp_path / "plan.epoch3.json").read_text())
    placed = lambda plan: [(s["device"], s["start"], s["end"]) for s in plan["stages"]]  # noqa: E731
    assert placed(taken_back) == placed(json.loads(plan_path.read_text()))
    assert stderr.wait_for(lambda text: "with server-a back" in text, timeout_s=5), stderr.text[-3000:]
    assert stage_actors() == {}


# the node goes last: the module ends with it
def test_a_stage_lost_with_its_node_mid_request_ends_it_with_an_error_naming_the_stage(
    cluster, plan_file, ray_env
):
    serve = _serve(
        plan_file, cluster.address, ray_env, "--max-new-tokens", "400", "--prompt", STORY,
        "--reconnect-wait", str(STAYS_AWAY_S),
    )  # fmt: skip
    stdout = Output(serve.stdout)
    stderr = Output(serve.stderr)
    try:
        # the answer streams token by token: wait for the first words, then take server-a away
        assert stdout.wait_for(lambda text: len(text.split()) >= 3, timeout_s=240), stderr.text[-3000:]
        actors = stage_actors()
        victim = actors["server-a"]
        lost = time.monotonic()
        # every process of the node at once: its raylet, and the actor with it (no node to start it on)
        (node,) = [n for n in cluster.worker_nodes if n.node_id == victim["node_id"]]
        cluster.remove_node(node, allow_graceful=False)
        code = serve.wait(STEP_TIMEOUT_S)
        ended_s = time.monotonic() - lost
    finally:
        stop_process(serve)
    stderr.wait_for(lambda _: False, timeout_s=1)
    print(f"request ended {ended_s:.2f} s after the node died")
    assert code == 2, stderr.text[-3000:]
    assert ended_s < 30, "the request outlived its stage by far"
    (error,) = [line for line in stderr.text.splitlines() if line.startswith("partition serve: error:")]
    assert "stage 'server-a'" in error and "died" in error and victim["node_id"][:12] in error, error
    assert "(its node is gone)" in error and "run serve again" in error, error
    assert wait_gone([info["pid"] for info in actors.values()]) == []
    assert stage_actors() == {}
