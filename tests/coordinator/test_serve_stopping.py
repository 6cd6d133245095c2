"""Serve stopping while requests are under way (Ctrl-C of serve --http closes the answerer under its
request threads): each request ends with StoppedError saying so. None goes on through half a
deployment, none passes for whole, and nothing waits on the closed event loop."""

import asyncio
import gc
import threading
import warnings

import pytest

from partition.coordinator.health import Health, HealthChecks, check_health
from partition.coordinator.loop import LoopThread
from partition.errors import StoppedError
from tests.coordinator.test_resume import TOKENS, request, served

JOIN_S = 60.0


def test_a_request_after_serve_stopped_is_refused_as_stopped(smollm2):
    with served(smollm2) as (answerer, _):
        answerer.close()
        with pytest.raises(StoppedError, match="serve stopped while this request was under way"):
            answerer.answer(request(answerer))


def test_health_says_ok_while_serving_and_unavailable_once_serve_stops(smollm2):
    with served(smollm2) as (answerer, _):
        plan = answerer.deployment.plan
        assert check_health(answerer) == Health("ok", plan.plan_id, plan.epoch)
        answerer.close()
        stopped = check_health(answerer)
        assert stopped.http_status == 503 and stopped.status == "unavailable" and "stopping" in stopped.advice
        assert stopped.report()["plan_id"] == plan.plan_id


def test_health_looks_are_shared_by_the_callers_within_its_max_age(smollm2):
    with served(smollm2) as (answerer, restarts):
        checks = HealthChecks(answerer, max_age_s=3600.0)
        first = checks.current()
        restarts.kill()  # within the max age the look stands: no client can make serve probe again
        assert first.status == "ok" and checks.current() is first
        checks.max_age_s = 0.0
        assert checks.current().away == ("server-a",)


def test_a_request_whose_serve_stops_between_two_tokens_ends_stopped(smollm2):
    with served(smollm2) as (answerer, _):
        chunks = []

        def stop_after_the_fifth_chunk(text: str) -> None:
            chunks.append(text)
            if len(chunks) == 5:
                answerer.close()

        with pytest.raises(StoppedError):
            answerer.answer(request(answerer), on_text=stop_after_the_fifth_chunk)
        assert len(chunks) == 5  # not a token after the stop


def test_requests_under_way_when_serve_stops_end_stopped_never_whole(smollm2):
    with served(smollm2, sessions=2) as (answerer, _):
        whole = answerer.answer(request(answerer)).result.text
        outcomes: dict[int, object] = {}
        texts: dict[int, list[str]] = {0: [], 1: []}
        both_going = threading.Barrier(3)

        def ask(i: int) -> None:
            def on_text(text: str) -> None:
                texts[i].append(text)
                if len(texts[i]) == 3:
                    both_going.wait(JOIN_S)

            try:
                outcomes[i] = answerer.answer(request(answerer), on_text=on_text)
            except Exception as error:  # what each request ended with is the assertion
                outcomes[i] = error

        threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in (0, 1)]
        for thread in threads:
            thread.start()
        both_going.wait(JOIN_S)  # both are mid-answer: stop serve under them, as Ctrl-C does
        answerer.close()
        for thread in threads:
            thread.join(JOIN_S)
            assert not thread.is_alive()  # nothing waits on the closed loop
        for i in (0, 1):
            assert isinstance(outcomes[i], StoppedError), outcomes[i]
            assert whole.startswith("".join(texts[i])) and len(texts[i]) < TOKENS  # a true prefix, cut


def test_a_closed_loop_ends_what_waits_on_it_and_runs_nothing_more():
    loop = LoopThread()
    ended: list[BaseException] = []

    def wait_long() -> None:
        try:
            loop.run(asyncio.sleep(3600))
        except BaseException as error:  # what it ended with is the assertion
            ended.append(error)

    waiter = threading.Thread(target=wait_long, daemon=True)
    waiter.start()
    while not [t for t in asyncio.all_tasks(loop.loop)]:  # its sleep is on the loop
        threading.Event().wait(0.01)
    loop.close()
    waiter.join(JOIN_S)
    assert not waiter.is_alive() and isinstance(ended[0], StoppedError)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(StoppedError):
            loop.run(asyncio.sleep(0))
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_an_http_stream_cut_by_the_stop_ends_with_a_503_event_and_later_requests_get_a_503(smollm2, caplog):
    from partition.api.server import ApiServer
    from tests.api.test_http_endpoint import events
    from tests.api.test_http_endpoint import request as http_request

    with served(smollm2) as (answerer, _):
        server = ApiServer("127.0.0.1", 0)
        server.attach(answerer)
        chunks = []

        def stop_after_the_fifth_chunk(text: str) -> None:  # serve stopping mid-stream (Ctrl-C)
            chunks.append(text)
            if len(chunks) == 5:
                answerer.close()

        answer = answerer.answer
        answerer.answer = lambda request, on_text, *rest: answer(
            request, lambda text: (stop_after_the_fifth_chunk(text), on_text(text)), *rest
        )
        server.serve_in_thread()
        try:
            body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 24}
            status, text = http_request(server, "POST", "/v1/chat/completions", {**body, "stream": True})
            sent = events(text)
            assert status == 200 and sent[-1] == "[DONE]"
            assert (
                sent[-2]["error"]["code"] == "server_stopping"
                and "send it again" in sent[-2]["error"]["message"]
            )
            assert not [
                e for e in sent[:-2] if e["choices"][0].get("finish_reason")
            ]  # never passed for whole
            # the access log says 200 for it: the log says how it ended
            assert (
                '"POST /v1/chat/completions HTTP/1.1" streamed with 200, then ended with a 503 (server_stopping)'
                in caplog.text
            )
            status, reply = http_request(server, "POST", "/v1/chat/completions", body)
            assert status == 503 and reply["error"]["code"] == "server_stopping"
        finally:
            server.shutdown()
            server.server_close()


def test_a_worker_another_deployment_took_is_named_by_health_and_by_the_request(smollm2):
    """A second serve given the same worker loads its own plan there: this serve's steps are refused.
    /health says so (503, naming the plan the worker serves) and the request's error says what to do,
    instead of "ok" and a bare FAILED_PRECONDITION."""
    from partition.coordinator.deploy import deploy
    from partition.transport.client import StageCallError
    from tests.coordinator.plans import split_plan

    with served(smollm2) as (answerer, restarts):
        ours = answerer.deployment.plan
        other_plan = split_plan(smollm2, [("phone", 0, 20, "raw"), ("server-a", 20, 32, "raw")])
        other = deploy(other_plan, {"server-a": restarts.worker.address}, max_context=128, max_sessions=1)
        try:
            health = check_health(answerer)
            assert health.http_status == 503 and health.status == "unavailable"
            assert (
                f"server-a serves plan {other_plan.plan_id!r} epoch 1, not this serve's plan "
                in health.advice
            )
            assert f"{ours.plan_id!r} epoch {ours.epoch}: another deployment took them" in health.advice
            with pytest.raises(StageCallError) as refused:
                answerer.answer(request(answerer))
            assert "another deployment took this worker" in refused.value.details
        finally:
            other.close()
