"""`partition bench` when a worker fails some of its requests (coordinator/bench.py): the run goes on,
the requests answered are measured, and each failed one is kept with the worker's error."""

import grpc

import partition.coordinator.bench as bench
from partition.coordinator.deploy import deploy
from partition.coordinator.session import PipelineSession
from partition.transport.local import spawn_worker
from tests.coordinator.plans import split_plan

PROMPT = [1, 504, 3458, 282, 4649, 314, 5175, 47]
NEW_TOKENS = 4


def test_requests_a_worker_fails_are_kept_apart_and_the_run_goes_on(smollm2, monkeypatch):
    worker = spawn_worker("server-a", extra_args=("--threads", "1"))
    opened: list[str] = []

    class KilledDuringTheThirdRequest(PipelineSession):
        """The worker process is killed after the third request's first step (its prompt): that
        request fails mid-answer, the fourth when it opens."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self.session_id)

        def step(self, token_ids, position):
            logits = super().step(token_ids, position)
            if len(opened) == 3 and worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=30)
            return logits

    monkeypatch.setattr(bench, "PipelineSession", KilledDuringTheThirdRequest)
    try:
        plan = split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
        deployment = deploy(plan, {"server-a": worker.address}, max_context=len(PROMPT) + NEW_TOKENS)
        try:
            run = bench.run_requests(deployment, PROMPT, NEW_TOKENS, requests=4, concurrency=1)
        finally:
            deployment.close()
    finally:
        worker.stop()

    assert [index for index, _ in run.failed] == [2, 3]
    for _, error in run.failed:  # named as the plan names the worker, with its status
        assert error.device == "server-a" and error.code == grpc.StatusCode.UNAVAILABLE
    assert len(run.timings) == len(run.open_s) == 2
    assert [len(ids) for ids in run.token_ids] == [NEW_TOKENS, NEW_TOKENS]
    assert all(timing.n_tokens == NEW_TOKENS for timing in run.timings)
    # only the answered requests' hops: none of the failed third request's prompt step
    assert {span.session for span in run.spans} == set(opened[:2])
