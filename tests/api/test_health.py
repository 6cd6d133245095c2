"""GET /health as a load balancer sees it: a real HTTP server over a deployment whose second half runs
in a real worker process, which is paused (SIGSTOP, as a host too busy to run it) or killed under it.
Nothing repairs a worker here, so one counted away turns /health into a 503."""

import os
import signal
import threading
import time

import pytest

from partition.coordinator.health import HEALTH_TRIES, HEALTH_WAIT_S, MAX_AGE_S
from tests.api.test_http_endpoint import api_server, request
from tests.coordinator.test_resume import served

MARGIN_S = 1.5  # for a loaded 2-core host: the HTTP round trip, thread wake-ups


@pytest.fixture
def endpoint(smollm2):
    """(the ApiServer, the worker's process), the worker answering /health's probes to begin with."""
    with served(smollm2) as (answerer, restarts), api_server(answerer) as server:
        status, health = request(server, "GET", "/health")
        assert status == 200 and health["status"] == "ok", health
        time.sleep(MAX_AGE_S)  # the next GET looks again instead of taking this look
        yield server, restarts.worker.process


def timed_health(server) -> tuple[int, dict, float]:
    started = time.monotonic()
    status, health = request(server, "GET", "/health")
    return status, health, time.monotonic() - started


def test_a_worker_that_misses_one_probe_and_then_answers_keeps_health_ok(endpoint):
    server, worker = endpoint
    # past the first probe's wait, early in the second's: slack for a busy host to answer it
    pause_s = 1.25 * HEALTH_WAIT_S
    os.kill(worker.pid, signal.SIGSTOP)
    resume = threading.Timer(pause_s, os.kill, (worker.pid, signal.SIGCONT))
    resume.start()
    try:
        status, health, took_s = timed_health(server)
    finally:
        resume.join()
        os.kill(worker.pid, signal.SIGCONT)
    assert status == 200 and health["status"] == "ok", health
    assert took_s >= HEALTH_WAIT_S  # its first probe did go unanswered


def test_a_worker_that_hangs_is_unavailable_within_two_tries(endpoint):
    server, worker = endpoint
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        status, health, took_s = timed_health(server)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert status == 503 and health["status"] == "unavailable" and health["away"] == ["server-a"], health
    assert HEALTH_TRIES * HEALTH_WAIT_S <= took_s < HEALTH_TRIES * 2 * HEALTH_WAIT_S + MARGIN_S


def test_a_worker_that_died_is_unavailable_within_two_waits_to_connect(endpoint):
    server, worker = endpoint
    worker.kill()
    worker.wait(timeout=30)
    status, health, took_s = timed_health(server)
    assert status == 503 and health["status"] == "unavailable" and health["away"] == ["server-a"], health
    assert "start the worker of server-a again" in health["advice"]
    assert took_s < HEALTH_TRIES * HEALTH_WAIT_S + MARGIN_S
