"""deploy refuses a plan that does not fit the model on this machine, before loading anything; the edge
loads its segments while the workers load theirs."""

import dataclasses
import re

import pytest

from partition.coordinator.deploy import DeployError, deploy
from partition.types import ModelRef, Segment, Stage
from tests.coordinator.plans import split_plan


def test_a_plan_for_another_block_count_is_refused_with_what_to_do(smollm2):
    plan = split_plan(smollm2, [("phone", 0, 32, "raw")])
    other = dataclasses.replace(
        plan,
        model=ModelRef(smollm2.name, smollm2.digest, 38),
        stages=(Stage("phone", Segment(0, 40), "raw"),),
    )
    with pytest.raises(
        DeployError, match="the plan splits 38 blocks, but 'smollm2-135m' has 30; re-run `partition plan`"
    ):
        deploy(other, {})


def test_a_plan_for_a_model_this_machine_lacks_says_the_name_is_the_plans(smollm2):
    from partition.errors import ModelNotFoundError

    plan = split_plan(smollm2, [("phone", 0, 32, "raw")])
    other = dataclasses.replace(plan, model=dataclasses.replace(plan.model, name="llama-7b"))
    with pytest.raises(ModelNotFoundError, match="the plan's model 'llama-7b' is not on this machine"):
        deploy(other, {})


@pytest.mark.parametrize(
    ("max_context", "advice"),
    [(64, "serve with a larger --max-context (at most 8192, the model's)"), (10_000, "use a shorter prompt")],
)
def test_a_session_longer_than_the_context_says_what_can_help(smollm2, max_context, advice):
    from partition.coordinator.session import PipelineSession
    from partition.errors import ContextOverflowError

    deployment = deploy(split_plan(smollm2, [("phone", 0, 32, "raw")]), {}, max_context=max_context)
    try:
        with pytest.raises(ContextOverflowError, match=re.escape(advice)):
            PipelineSession(deployment, context=9000)
    finally:
        deployment.close()


def test_a_max_context_above_the_models_says_what_sessions_get(smollm2, caplog):
    deployment = deploy(split_plan(smollm2, [("phone", 0, 32, "raw")]), {}, max_context=10_000)
    deployment.close()
    assert deployment.max_context == 8192
    assert (
        "max context 10000 is more than 'smollm2-135m' holds: sessions get at most 8192 tokens" in caplog.text
    )


def test_reloading_onto_a_worker_that_hangs_names_it_within_the_wait(smollm2):
    """A stopped process keeps its connections up, and LoadSegment would wait on it for its 900 s
    timeout (or the keepalive's minute): the reload names the device once it has not answered a probe
    within the wait."""
    import os
    import signal

    import grpc

    from partition.coordinator.deploy import load_workers
    from partition.transport.client import StageCallError
    from partition.transport.local import spawn_worker

    worker = spawn_worker("server-a", extra_args=("--threads", "1"))
    plan = split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
    deployment = deploy(plan, {"server-a": worker.address}, max_context=64, max_sessions=1)
    try:
        os.kill(worker.pid, signal.SIGSTOP)
        with pytest.raises(StageCallError) as away:
            load_workers(deployment, connect_wait_s=2.0)
        assert away.value.code == grpc.StatusCode.UNAVAILABLE and away.value.device == "server-a"
        assert "no answer within 2 s: its worker is down, or hangs" in str(away.value)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        deployment.close()
        worker.stop()


def test_a_plan_that_addresses_another_worker_is_refused_and_that_worker_keeps_serving(smollm2):
    """A cluster file that gives server-b the address of server-a (or a dead worker's port given to
    another): server-a refuses the load before dropping anything, and the plan it serves goes on."""
    from partition.coordinator.answer import Answerer
    from partition.transport.local import spawn_worker
    from tests.coordinator.test_resume import request

    worker = spawn_worker("server-a", extra_args=("--threads", "1"))
    served = Answerer(
        deploy(
            split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")]),
            {"server-a": worker.address},
            max_context=128,
            max_sessions=1,
        )
    )
    try:
        before = served.answer(request(served))
        mistaken = split_plan(smollm2, [("phone", 0, 8, "raw"), ("server-b", 8, 32, "raw")], epoch=5)
        with pytest.raises(DeployError) as refused:
            deploy(mistaken, {"server-b": worker.address}, max_context=128, max_sessions=1)
        assert f"worker for device 'server-b' at {worker.address} refused" in str(refused.value)
        assert "this is worker 'server-a', the LoadSegment is for 'server-b'" in str(refused.value)
        assert "Correct that device's address in the cluster file" in str(refused.value)
        after = served.answer(request(served))
        assert after.result.token_ids == before.result.token_ids
        assert after.resumes == 0 and served.reloads == 0  # server-a still held the plan's segment
    finally:
        served.close()
        worker.stop()


def test_the_edge_loads_its_segments_while_the_workers_load_theirs(smollm2, monkeypatch):
    """The edge's load waits to see the workers' LoadSegment under way: one after the other (the edge
    first, as before), that wait would run out."""
    import threading

    import partition.model as model
    from partition.transport.client import Chain
    from partition.transport.local import spawn_worker

    workers_loading = threading.Event()
    chain_load, load_segment = Chain.load, model.load_segment
    seen_loading = []

    async def noted(self, *args, **kwargs):
        workers_loading.set()
        return await chain_load(self, *args, **kwargs)

    def edge_load(*args, **kwargs):
        seen_loading.append(workers_loading.wait(timeout=10))
        return load_segment(*args, **kwargs)

    monkeypatch.setattr(Chain, "load", noted)
    monkeypatch.setattr(model, "load_segment", edge_load)
    worker = spawn_worker("server-a", extra_args=("--threads", "1"))
    try:
        plan = split_plan(
            smollm2, [("phone", 0, 8, "raw"), ("server-a", 8, 24, "raw"), ("phone", 24, 32, "raw")]
        )
        deployment = deploy(plan, {"server-a": worker.address}, max_context=64, max_sessions=1)
        try:
            assert seen_loading == [True, True]  # the front's and the tail's loads, both beside the workers'
            assert deployment.front_model is not None and deployment.tail_model is not None
            assert deployment.acks[0].worker == "server-a"
        finally:
            deployment.close()
    finally:
        worker.stop()


@pytest.mark.parametrize("remote", [False, True])
def test_an_edge_load_that_fails_leaves_no_loop_running(smollm2, monkeypatch, remote):
    import threading

    import partition.model as model
    from partition.transport.local import spawn_worker

    def no_room(*_args, **_kwargs):
        raise MemoryError("no room for the edge's blocks")

    def io_threads() -> int:
        return sum(thread.name == "coordinator-io" for thread in threading.enumerate())

    stages = [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")] if remote else [("phone", 0, 32, "raw")]
    worker = spawn_worker("server-a", extra_args=("--threads", "1")) if remote else None
    try:
        before = io_threads()
        monkeypatch.setattr(model, "load_segment", no_room)
        with pytest.raises(MemoryError, match="no room"):
            deploy(
                split_plan(smollm2, stages), {"server-a": worker.address} if worker else {}, max_context=64
            )
        assert io_threads() == before  # the deployment's loop stopped (close() ends the channels first)
    finally:
        if worker is not None:
            worker.stop()
