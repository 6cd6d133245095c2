"""A worker that dies and stays away: the coordinator plans again without it, deploys the new plan on
the real worker processes left and the request under way ends with the tokens of an uninterrupted run;
once the worker is back, it is planned with again (coordinator/replan.py)."""

import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest

from partition.artifacts import load_plan
from partition.coordinator.answer import Answerer
from partition.coordinator.deploy import deploy
from partition.coordinator.replan import (
    MAX_RECHECK_S,
    RECHECK_S,
    Failover,
    check_cluster_fits,
    replan_without,
)
from partition.errors import ConfigError, InfeasiblePlanError
from partition.plan import load_cluster
from partition.plan.validate import serving_problem
from partition.transport.client import StageCallError
from partition.transport.local import spawn_worker, spawn_workers, stop_workers
from partition.types import Pinning
from tests.coordinator.plans import profiled_cluster, split_plan
from tests.coordinator.test_resume import request

# Seconds a lost worker is waited for before it is planned around: here it stays away, and a wait of
# one reconnect attempt tells so (the default, long enough for a supervisor's restart, is tested in
# test_resume.py).
STAYS_AWAY_S = 3.0
THREE_STAGES = [("phone", 0, 16, "raw"), ("server-a", 16, 24, "raw"), ("server-b", 24, 32, "raw")]


def three_stage_plan(source):
    """phone [0,16) -> server-a [16,24) -> server-b [24,32), made with lossless codecs only: a re-plan
    keeps to them, so the split tokens stay exact."""
    return replace(split_plan(source, THREE_STAGES), codecs=("raw",))


@pytest.fixture
def two_workers(smollm2, tmp_path):
    started = spawn_workers(["server-a", "server-b"], extra_args=("--threads", "1"))
    workers = {worker.name: worker for worker in started}
    try:
        yield workers
    finally:
        stop_workers(list(workers.values()))


def serving(smollm2, tmp_path, workers, memory_gb=None, recheck_s=RECHECK_S, sessions=1):
    """An Answerer with a failover over the profiled cluster of `workers` (plan file tmp_path/plan.json),
    serving `sessions` requests at once."""
    addresses = {name: worker.address for name, worker in workers.items()}
    cluster = profiled_cluster(smollm2, tmp_path, addresses, memory_gb or dict.fromkeys(workers, 8.0))
    plan = three_stage_plan(smollm2)
    deployment = deploy(plan, addresses, max_context=128, max_sessions=sessions)
    failover = Failover(
        load_cluster(cluster), addresses, plan_path=tmp_path / "plan.json", recheck_s=recheck_s
    )
    return Answerer(deployment, failover=failover, reconnect_wait_s=STAYS_AWAY_S)


def kill(worker) -> None:
    worker.process.kill()
    worker.process.wait(timeout=30)


def restart(workers, name: str) -> None:
    """Start the worker of `name` again at its address (it comes back empty)."""
    port = int(workers[name].address.rpartition(":")[2])
    workers[name] = spawn_worker(name, port=port, extra_args=("--threads", "1"))


def test_a_worker_lost_mid_request_is_planned_around_and_no_token_is_lost(smollm2, tmp_path, two_workers):
    answerer = serving(smollm2, tmp_path, two_workers)
    first = answerer.deployment
    try:
        whole = answerer.answer(request(answerer))  # uninterrupted, on the three-stage plan
        assert whole.plan.epoch == 1
        chunks = []

        def kill_server_b_for_good_after_the_fifth_chunk(text: str) -> None:
            chunks.append(text)
            if len(chunks) == 5:
                kill(two_workers["server-b"])

        replanned = answerer.answer(request(answerer), on_text=kill_server_b_for_good_after_the_fifth_chunk)
        assert replanned.result.token_ids == whole.result.token_ids
        assert replanned.result.text == whole.result.text == "".join(chunks)
        assert replanned.resumes == 1 and answerer.replans == 1
        plan = replanned.plan
        assert plan.epoch == 2 and plan.codecs == ("raw",) and plan.workload == whole.plan.workload
        assert {stage.device for stage in plan.stages} == {"phone", "server-a"}
        assert answerer.deployment.plan == plan
        # server-a loaded only the units it did not hold: its 8 blocks [16,24) are kept
        assert [(ack.worker, ack.units_kept) for ack in answerer.deployment.acks] == [("server-a", 8)]
        assert first.chain is None and first.front_model is None  # closed: no request runs on it
        assert load_plan(tmp_path / "plan.epoch2.json") == plan  # the new plan, beside the old one
        report = replanned.report()
        assert report["epoch"] == 2 and report["resumes"] == 1

        again = answerer.answer(request(answerer, "What is the capital of France?"))
        assert "Paris" in again.result.text and again.plan == plan and answerer.replans == 1
    finally:
        answerer.close()


def test_another_worker_at_a_lost_workers_address_is_planned_around_and_keeps_its_own(
    smollm2, tmp_path, two_workers, caplog
):
    """server-b dies and its port goes to a worker of another name: the reload finds the plan's worker
    not there, as when nothing answers, and the request goes on without it; the other worker is not
    given server-b's segment. The looks for server-b that follow (one per request here) ask the name of
    what answers there, so they neither drain nor reload the plan served until server-b's own worker
    is back."""
    answerer = serving(smollm2, tmp_path, two_workers, recheck_s=0.0)
    try:
        whole = answerer.answer(request(answerer))
        port = int(two_workers["server-b"].address.rpartition(":")[2])
        kill(two_workers["server-b"])
        two_workers["server-b"] = spawn_worker("server-c", port=port, extra_args=("--threads", "1"))
        around = answerer.answer(request(answerer))
        assert around.result.token_ids == whole.result.token_ids
        assert answerer.replans == 1 and around.plan.epoch == 2
        assert {stage.device for stage in around.plan.stages} == {"phone", "server-a"}
        assert answerer.failover.lost == {"server-b"}
        assert "loaded server-c" not in two_workers["server-b"].log_text()  # it refused the load

        served = answerer.deployment
        for _ in range(2):  # a look at each: server-c is not server-b
            still = answerer.answer(request(answerer))
            assert still.plan.epoch == 2 and answerer.deployment is served and answerer.rejoins == 0
        assert answerer.failover.wait_s == 0.0  # no take-back tried, so none failed and postponed
        address = answerer.failover.addresses["server-b"]
        assert [r.message for r in caplog.records if "answers at" in r.message] == [
            f"server-b is not back: worker 'server-c' answers at {address}; server-b is planned with "
            f"again once its own worker does (partition worker --listen {address} --name server-b)"
        ]  # once, not at every look

        kill(two_workers["server-b"])
        restart(two_workers, "server-b")
        back = answerer.answer(request(answerer))
        devices = {stage.device for stage in back.plan.stages}
        assert back.plan.epoch == 3 and devices == {"phone", "server-a", "server-b"}
        assert back.result.token_ids == whole.result.token_ids
    finally:
        answerer.close()


def test_a_worker_away_when_serving_starts_is_planned_around_then_taken_back(smollm2, tmp_path, two_workers):
    addresses = {name: worker.address for name, worker in two_workers.items()}
    cluster = profiled_cluster(smollm2, tmp_path, addresses, dict.fromkeys(addresses, 8.0))
    failover = Failover(load_cluster(cluster), addresses, plan_path=tmp_path / "plan.json", recheck_s=0.0)
    first = three_stage_plan(smollm2)
    kill(two_workers["server-b"])
    deployment = failover.deploy(first, max_context=128, max_sessions=1)
    answerer = Answerer(deployment, failover=failover, reconnect_wait_s=STAYS_AWAY_S)
    try:
        without = deployment.plan
        assert without.epoch == 2 and "server-b" not in {s.device for s in without.stages}
        assert failover.lost == {"server-b"} and load_plan(tmp_path / "plan.epoch2.json") == without
        around = answerer.answer(request(answerer))
        assert around.plan == without and around.resumes == 0

        restart(two_workers, "server-b")
        back = answerer.answer(request(answerer))  # the plan it was started with, one epoch on
        assert back.plan.epoch == 3 and back.plan.stages == first.stages and failover.lost == set()
        assert back.result.token_ids == around.result.token_ids  # lossless codecs on both plans
    finally:
        answerer.close()


@pytest.fixture
def loops_made(monkeypatch):
    """Every LoopThread made while the test runs, in order."""
    from partition.coordinator.loop import LoopThread

    made, init = [], LoopThread.__init__

    def recording_init(self):
        init(self)
        made.append(self)

    monkeypatch.setattr(LoopThread, "__init__", recording_init)
    return made


def test_planning_around_a_worker_away_at_the_start_keeps_the_first_trys_loop(
    smollm2, tmp_path, two_workers, loops_made
):
    """gRPC's asyncio poller hands a completion of the first try's calls to the loop they began on: a
    second loop, with the first closed, got it as "Event loop is closed", logged with a traceback."""
    addresses = {name: worker.address for name, worker in two_workers.items()}
    cluster = profiled_cluster(smollm2, tmp_path, addresses, dict.fromkeys(addresses, 8.0))
    failover = Failover(load_cluster(cluster), addresses)
    kill(two_workers["server-b"])
    deployment = failover.deploy(three_stage_plan(smollm2), max_context=128, max_sessions=1)
    try:
        assert deployment.plan.epoch == 2 and loops_made == [deployment.loop]
        assert deployment.owns_loop and not deployment.loop.loop.is_closed()
    finally:
        deployment.close()
    assert deployment.loop.loop.is_closed()  # the deployment served stops it


def test_a_worker_away_at_the_start_without_profiles_is_named_with_how_to_start_it(smollm2, two_workers):
    from partition.coordinator.deploy import WorkerAwayError

    addresses = {name: worker.address for name, worker in two_workers.items()}
    kill(two_workers["server-b"])
    with pytest.raises(WorkerAwayError) as error:
        deploy(three_stage_plan(smollm2), addresses, max_context=128, max_sessions=1)
    assert error.value.device == "server-b"
    assert f"partition worker --listen {addresses['server-b']} --name server-b" in str(error.value)


def test_a_worker_away_at_the_start_that_nothing_serves_without_is_named_with_why(
    smollm2, tmp_path, two_workers, loops_made
):
    from partition.coordinator.deploy import WorkerAwayError

    addresses = {name: worker.address for name, worker in two_workers.items()}
    small = {"phone": 0.05, "server-a": 0.05, "server-b": 8.0}  # only server-b holds the big segments
    cluster = load_cluster(profiled_cluster(smollm2, tmp_path, addresses, small))
    failover = Failover(cluster, addresses, plan_path=tmp_path / "plan.json")
    kill(two_workers["server-b"])
    with pytest.raises(WorkerAwayError) as error:
        failover.deploy(three_stage_plan(smollm2), max_context=128, max_sessions=1)
    assert error.value.device == "server-b"
    assert f"partition worker --listen {addresses['server-b']} --name server-b" in str(error.value)
    assert "; planning without it failed: " in str(error.value)
    assert loops_made and all(made.loop.is_closed() for made in loops_made)  # none left running


def test_requests_under_way_on_the_replaced_plan_go_on_on_the_new_one(smollm2, tmp_path, two_workers):
    """Two requests at once: one re-plans, the other shares that outcome (its stream broke too, or it
    opened on the old plan as a worker left took the new epoch) and resumes on the new plan."""
    addresses = {name: worker.address for name, worker in two_workers.items()}
    cluster = profiled_cluster(smollm2, tmp_path, addresses, dict.fromkeys(addresses, 8.0))
    deployment = deploy(three_stage_plan(smollm2), addresses, max_context=128, max_sessions=2)
    failover = Failover(load_cluster(cluster), addresses)
    answerer = Answerer(deployment, failover=failover, reconnect_wait_s=STAYS_AWAY_S)
    try:
        whole = answerer.answer(request(answerer))
        chunks, answers = [], []

        def kill_server_b_after_the_fifth_chunk(text: str) -> None:
            chunks.append(text)
            if len(chunks) == 5:
                kill(two_workers["server-b"])

        other = threading.Thread(target=lambda: answers.append(answerer.answer(request(answerer))))
        other.start()
        answers.append(answerer.answer(request(answerer), on_text=kill_server_b_after_the_fifth_chunk))
        other.join(timeout=300)
        assert len(answers) == 2 and answerer.replans == 1
        for answer in answers:
            assert answer.result.token_ids == whole.result.token_ids and answer.plan.epoch == 2
    finally:
        answerer.close()


def test_with_every_server_gone_the_edge_answers_alone_until_they_are_back(smollm2, tmp_path, two_workers):
    answerer = serving(smollm2, tmp_path, two_workers, recheck_s=0.0)
    first = answerer.deployment.plan
    try:
        whole = answerer.answer(request(answerer))
        for worker in two_workers.values():
            kill(worker)
        alone = answerer.answer(request(answerer))
        assert alone.result.token_ids == whole.result.token_ids and alone.resumes == 0
        assert [(s.device, str(s.segment)) for s in alone.plan.stages] == [("phone", "[0,32)")]
        assert answerer.replans == 1 and alone.plan.epoch == 2

        restart(two_workers, "server-a")  # one back: planned with, the other still left out
        one = answerer.answer(request(answerer))
        assert one.plan.epoch == 3 and {s.device for s in one.plan.stages} == {"phone", "server-a"}
        assert one.result.token_ids == whole.result.token_ids and answerer.failover.lost == {"server-b"}
        restart(two_workers, "server-b")  # both back: the plan served first
        both = answerer.answer(request(answerer))
        assert both.plan.epoch == 4 and both.plan.stages == first.stages
        assert both.result.token_ids == whole.result.token_ids and answerer.rejoins == 2
    finally:
        answerer.close()


def test_a_plan_that_no_longer_fits_ends_the_request_named_as_before(smollm2, tmp_path, two_workers):
    # the phone cannot hold the model, server-a holds too little to take server-b's blocks
    memory_gb = {"phone": 0.5, "server-a": 0.1, "server-b": 8.0}
    answerer = serving(smollm2, tmp_path, two_workers, memory_gb)
    try:
        two_workers["server-b"].process.kill()
        two_workers["server-b"].process.wait(timeout=30)
        with pytest.raises(StageCallError) as failure:
            answerer.answer(request(answerer))
        assert failure.value.device == "server-b" and "UNAVAILABLE" in str(failure.value)
        assert "planning without it failed: the model needs" in str(failure.value)
        assert answerer.replans == 0 and answerer.deployment.plan.epoch == 1
        assert not (tmp_path / "plan.epoch2.json").exists()
    finally:
        answerer.close()


def test_a_worker_back_at_its_address_is_planned_with_again(smollm2, tmp_path, two_workers):
    answerer = serving(smollm2, tmp_path, two_workers, recheck_s=0.0)
    first = answerer.deployment.plan
    try:
        whole = answerer.answer(request(answerer))
        kill(two_workers["server-b"])
        without = answerer.answer(request(answerer))
        assert without.plan.epoch == 2 and "server-b" not in {s.device for s in without.plan.stages}
        assert answerer.failover.lost == {"server-b"}
        no_change_yet = answerer.answer(request(answerer))  # looked: nothing listens there yet
        assert no_change_yet.plan == without.plan and answerer.rejoins == 0

        replaced = answerer.deployment
        restart(two_workers, "server-b")
        back = answerer.answer(request(answerer))  # the request starts on the plan served first
        assert back.plan.epoch == 3 and back.plan.stages == first.stages
        assert back.plan.plan_id == first.plan_id
        assert back.result.token_ids == whole.result.token_ids and back.resumes == 0
        assert answerer.rejoins == 1 and answerer.replans == 1 and answerer.failover.lost == set()
        assert load_plan(tmp_path / "plan.epoch3.json") == back.plan
        assert replaced.chain is None and replaced.front_model is None  # closed once the request ended
        assert answerer.answer(request(answerer)).plan == back.plan  # nothing more to take back

        kill(two_workers["server-b"])  # and lost once more: planned around again, one epoch on
        again = answerer.answer(request(answerer))
        assert again.plan.epoch == 4 and again.result.token_ids == whole.result.token_ids
        assert answerer.replans == 2
    finally:
        answerer.close()


def test_requests_starting_during_a_take_back_wait_for_it_and_run_on_the_plan_with_it(
    smollm2, tmp_path, two_workers
):
    """Two requests start at once after server-b is back: one deploys the plan with it, the other waits
    for that (or finds it done), and neither runs on the plan being replaced."""
    addresses = {name: worker.address for name, worker in two_workers.items()}
    cluster = profiled_cluster(smollm2, tmp_path, addresses, dict.fromkeys(addresses, 8.0))
    deployment = deploy(three_stage_plan(smollm2), addresses, max_context=128, max_sessions=2)
    failover = Failover(load_cluster(cluster), addresses, recheck_s=0.0)
    answerer = Answerer(deployment, failover=failover, reconnect_wait_s=STAYS_AWAY_S)
    try:
        whole = answerer.answer(request(answerer))
        kill(two_workers["server-b"])
        assert answerer.answer(request(answerer)).plan.epoch == 2
        restart(two_workers, "server-b")
        answers, start = [], threading.Barrier(2)

        def ask() -> None:
            start.wait()
            answers.append(answerer.answer(request(answerer)))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert len(answers) == 2 and answerer.rejoins == 1
        for answer in answers:
            assert answer.plan.epoch == 3 and answer.resumes == 0
            assert answer.result.token_ids == whole.result.token_ids
    finally:
        answerer.close()


def test_a_take_back_under_load_lets_the_request_under_way_end_first(smollm2, tmp_path, two_workers):
    """server-b comes back while a request runs on the plan without it: the next request waits for that
    one to end (a drain), then deploys the plan with server-b and runs on it; the first one is never
    moved mid-answer."""
    answerer = serving(smollm2, tmp_path, two_workers, recheck_s=0.0, sessions=2)
    try:
        whole = answerer.answer(request(answerer))
        kill(two_workers["server-b"])
        assert answerer.answer(request(answerer)).plan.epoch == 2
        chunks, later = [], []
        second = threading.Thread(target=lambda: later.append(answerer.answer(request(answerer))))
        draining, drained = threading.Event(), answerer._drained

        def drain_seen(timeout_s: float) -> bool:
            draining.set()
            return drained(timeout_s)

        answerer._drained = drain_seen

        def bring_server_b_back_and_start_another_request(text: str) -> None:
            chunks.append(text)
            if len(chunks) == 3:
                restart(two_workers, "server-b")
                second.start()
                # the second request found server-b back and waits for this one to end
                assert draining.wait(timeout=60) and answerer.rejoins == 0
                assert (answerer.running, answerer.waiting) == (1, 1)  # draining is waiting

        under_way = answerer.answer(request(answerer), on_text=bring_server_b_back_and_start_another_request)
        second.join(timeout=300)
        assert under_way.plan.epoch == 2 and under_way.resumes == 0
        assert under_way.result.token_ids == whole.result.token_ids
        assert len(later) == 1 and later[0].plan.epoch == 3 and later[0].resumes == 0
        assert later[0].result.token_ids == whole.result.token_ids and answerer.rejoins == 1
    finally:
        answerer.close()


def test_a_take_back_that_cannot_drain_in_time_is_put_off(smollm2, tmp_path, two_workers, monkeypatch):
    """A request under way that outlasts the drain: the request that found server-b back runs on the
    plan served, and the next look waits twice as long."""
    from partition.coordinator import answer

    monkeypatch.setattr(answer, "DRAIN_S", 0.0)
    answerer = serving(smollm2, tmp_path, two_workers, recheck_s=0.0, sessions=2)
    try:
        kill(two_workers["server-b"])
        assert answerer.answer(request(answerer)).plan.epoch == 2
        chunks, later = [], []

        def bring_server_b_back_and_ask_again(text: str) -> None:
            chunks.append(text)
            if len(chunks) == 3:
                restart(two_workers, "server-b")
                asker = threading.Thread(target=lambda: later.append(answerer.answer(request(answerer))))
                asker.start()
                asker.join(timeout=300)

        answerer.answer(request(answerer), on_text=bring_server_b_back_and_ask_again)
        assert len(later) == 1 and later[0].plan.epoch == 2 and answerer.rejoins == 0
        assert answerer.failover.lost == {"server-b"} and answerer.failover.wait_s == 1.0
    finally:
        answerer.close()


def test_a_device_back_is_looked_for_only_every_recheck_s(smollm2, tmp_path, two_workers):
    answerer = serving(smollm2, tmp_path, two_workers, recheck_s=3600.0)
    try:
        kill(two_workers["server-b"])
        answerer.answer(request(answerer))
        restart(two_workers, "server-b")
        assert answerer.answer(request(answerer)).plan.epoch == 2  # not looked for yet
        assert answerer.rejoins == 0 and answerer.failover.lost == {"server-b"}
    finally:
        answerer.close()


def test_a_take_back_that_fails_keeps_the_plan_served(smollm2, tmp_path, two_workers):
    """server-b's worker is back but with too small a KV budget for the slots serve asks: the plan with
    it fails to deploy (its LoadSegment is refused), the request is answered on the plan served, and the
    next look waits."""
    answerer = serving(smollm2, tmp_path, two_workers, recheck_s=0.0)
    try:
        whole = answerer.answer(request(answerer))
        kill(two_workers["server-b"])
        answerer.answer(request(answerer))
        port = int(two_workers["server-b"].address.rpartition(":")[2])
        two_workers["server-b"] = spawn_worker(
            "server-b", port=port, extra_args=("--threads", "1", "--kv-budget-mb", "1")
        )
        kept = answerer.answer(request(answerer))
        assert kept.plan.epoch == 2 and kept.result.token_ids == whole.result.token_ids
        assert answerer.rejoins == 0 and answerer.failover.lost == {"server-b"}
        assert answerer.failover.wait_s >= 1.0
    finally:
        answerer.close()


def test_a_server_that_is_no_worker_at_a_lost_workers_address_is_not_taken_for_it(
    smollm2, tmp_path, two_workers, caplog
):
    """A gRPC server without the Stage service at server-b's address: the look asks its name, gets
    UNIMPLEMENTED, and leaves the plan served alone (no take-back tried, none postponed)."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    answerer = serving(smollm2, tmp_path, two_workers, recheck_s=0.0)
    try:
        kill(two_workers["server-b"])
        around = answerer.answer(request(answerer))
        impostor = grpc.server(ThreadPoolExecutor(max_workers=1))
        impostor.add_insecure_port(two_workers["server-b"].address)
        impostor.start()
        try:
            kept = answerer.answer(request(answerer))
        finally:
            impostor.stop(grace=None)
        assert kept.plan == around.plan and answerer.rejoins == 0 and answerer.failover.wait_s == 0.0
        assert any(
            "server-b is not back" in r.message and "UNIMPLEMENTED" in r.message for r in caplog.records
        )
    finally:
        answerer.close()


# -- the re-plan itself (no processes) ------------------------------------------------------------------


def test_a_replan_keeps_workload_pinning_codecs_and_goes_one_epoch_on(smollm2, tmp_path):
    addresses = {"server-a": "127.0.0.1:1", "server-b": "127.0.0.1:2"}
    cluster = load_cluster(profiled_cluster(smollm2, tmp_path, addresses, {"server-a": 8.0, "server-b": 8.0}))
    plan = replace(three_stage_plan(smollm2), epoch=4, pin=Pinning(embed=True, head=True), min_gain=0.02)
    again = replan_without(plan, cluster, ["server-b"])
    assert again.epoch == 5 and again.workload == plan.workload and again.min_gain == 0.02
    assert again.pin == plan.pin and again.codecs == ("raw",)
    assert "server-b" not in {stage.device for stage in again.stages}
    assert again.stages[-1].device == "phone"  # the head stays pinned to the edge
    assert all(stage.codec_out == "raw" for stage in again.stages)
    # a plan that does not record its codecs may use every codec
    assert len(replan_without(replace(plan, codecs=()), cluster, ["server-b"]).codecs) > 1


def test_a_cluster_that_cannot_replan_the_plan_is_refused(smollm2, tmp_path):
    cluster = load_cluster(profiled_cluster(smollm2, tmp_path, {}, {"server-a": 8.0}))
    plan = three_stage_plan(smollm2)
    with pytest.raises(ConfigError, match="server-b that the cluster file does not list"):
        check_cluster_fits(plan, cluster)
    with pytest.raises(ConfigError, match="measured on model"):
        check_cluster_fits(replace(plan, model=replace(plan.model, digest="sha256:other")), cluster)
    with pytest.raises(ConfigError, match="is the edge"):
        cluster.without(["phone"])


def test_a_take_back_put_off_waits_twice_as_long_from_then(smollm2, tmp_path):
    addresses = {"server-a": "127.0.0.1:1", "server-b": "127.0.0.1:2"}
    cluster = load_cluster(profiled_cluster(smollm2, tmp_path, addresses, {"server-a": 8.0, "server-b": 8.0}))
    failover = Failover(cluster, addresses, recheck_s=60.0)
    assert not failover.due()  # nothing planned around
    failover.lost, failover.wait_s = {"server-b"}, 0.0
    assert failover.due()
    failover.postpone()  # a drain ran out, or the take-back failed
    assert failover.wait_s == 1.0 and not failover.due()  # counted from now, not from the look before
    failover.wait_s = 200.0
    failover.postpone()
    assert failover.wait_s == MAX_RECHECK_S


@pytest.mark.parametrize(
    ("phone_gb", "max_context", "max_sessions", "says"),
    [
        (0.5, 128, 1, "the model needs"),  # too small for the weights alone
        # the phone holds the whole model for the plan's workload, not with 4 slots of 2048 tokens
        (0.7, 2048, 4, r"serving --max-context 2048 x --max-sessions 4"),
    ],
)
def test_no_server_listening_and_an_edge_too_small_is_infeasible(
    smollm2, tmp_path, phone_gb, max_context, max_sessions, says
):
    addresses = {"server-a": "127.0.0.1:9", "server-b": "127.0.0.1:9"}  # nothing listens on port 9
    memory_gb = {"phone": phone_gb, "server-a": 8.0, "server-b": 8.0}
    cluster = load_cluster(profiled_cluster(smollm2, tmp_path, addresses, memory_gb))
    failover = Failover(cluster, addresses)

    # what redeploy reads of the deployment it replaces
    deployed = SimpleNamespace(
        plan=three_stage_plan(smollm2), max_context=max_context, max_sessions=max_sessions
    )
    with pytest.raises(InfeasiblePlanError, match=says):
        failover.redeploy(deployed, "server-b")
    assert failover.lost == set()  # nothing given up on while no plan without it was deployed


def test_a_look_asks_revive_for_new_workers_and_uses_their_addresses(smollm2, tmp_path, caplog):
    """serve --ray passes `revive`: a device back on a new node gets a new actor at a new address."""
    addresses = {"server-a": "127.0.0.1:1", "server-b": "127.0.0.1:2"}  # nothing listens there
    cluster = load_cluster(profiled_cluster(smollm2, tmp_path, addresses, {"server-a": 8.0, "server-b": 8.0}))
    revived = spawn_worker("server-b", extra_args=("--threads", "1"))  # the new actor's stage server
    try:
        asked = []

        def revive(devices: set[str]) -> dict[str, str]:
            asked.append(devices)
            return {"server-b": revived.address}

        failover = Failover(cluster, addresses, recheck_s=0.0, revive=revive)
        failover.lost = {"server-b"}
        assert failover.returned() == {"server-b"} and asked == [{"server-b"}]
        assert failover.addresses["server-b"] == revived.address and addresses["server-b"] == "127.0.0.1:2"
    finally:
        revived.stop()

    def cluster_gone(devices: set[str]) -> dict[str, str]:
        raise ConnectionError("the GCS does not answer")

    failover = Failover(cluster, addresses, recheck_s=0.0, revive=cluster_gone)
    failover.lost = {"server-b"}
    assert failover.returned() == set()  # a failed revive is a look that found nothing, not an error
    assert "looking for server-b again failed: the GCS does not answer" in caplog.text


def test_a_replan_fits_the_kv_slots_serve_allocates_not_only_the_plans_workload(smollm2, tmp_path):
    # the plan's workload (80 tokens, one session) needs little KV; serve allocates 4 slots of 2048
    addresses = {"server-a": "127.0.0.1:1", "server-b": "127.0.0.1:2"}
    memory_gb = {"phone": 0.5, "server-a": 0.6, "server-b": 8.0}
    cluster = load_cluster(profiled_cluster(smollm2, tmp_path, addresses, memory_gb))
    plan = three_stage_plan(smollm2)
    served = replan_without(plan, cluster, ["server-b"], max_context=2048, max_sessions=4)
    assert "server-b" not in {stage.device for stage in served.stages}
    assert serving_problem(cluster, served.stages, 2048, 4) == ""
    assert served.workload == plan.workload  # the objective is still the plan's
    # planned for the workload alone, the phone keeps more blocks than it can serve with
    alone = replan_without(plan, cluster, ["server-b"])
    assert "phone needs" in serving_problem(cluster, alone.stages, 2048, 4)


def test_a_new_plan_that_cannot_be_written_is_served_all_the_same(smollm2, tmp_path, caplog):
    """The file beside the plan is a record: a folder in its way warns, and the re-plan goes on."""
    from partition.coordinator.replan import Failover

    cluster = load_cluster(profiled_cluster(smollm2, tmp_path, {}, {"server-a": 8.0}))
    (tmp_path / "plan.epoch2.json").mkdir()
    failover = Failover(cluster, {}, plan_path=tmp_path / "plan.json")
    failover._write(replace(split_plan(smollm2, [("phone", 0, 32, "raw")]), epoch=2))
    assert "Is a directory" in caplog.text and "serving the new plan all the same" in caplog.text
    assert "remove what is at" in caplog.text
