"""A client that hangs up while its long prompt is prefilled, or while its session opens, as the endpoint
sees it: a real HTTP server over a chain of two real worker processes (server-a [0,16) -> server-b
[16,32), each on one thread). A prefill's request ends while the first stage computes the prompt, so the
second one never does; an opening's ends before the chain accepts the session."""

import json
import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from partition.coordinator.answer import Answerer
from partition.coordinator.deploy import deploy
from partition.transport.client import OPEN_TIMEOUT_S
from partition.transport.local import spawn_workers, stop_workers
from tests.api.test_http_endpoint import api_server, get_metrics, request
from tests.coordinator.plans import split_plan

LONG_PROMPT = "Once upon a time, " * 300  # about 1500 tokens: about 2 s of prefill per stage here
TIMEOUT_S = 300
GONE = 'partition_requests_total{outcome="client_gone"}'


@pytest.fixture(scope="module")
def chain(smollm2):
    """(the ApiServer, its Answerer, the worker processes in chain order)."""
    workers = spawn_workers(["server-a", "server-b"], extra_args=("--threads", "1"))
    try:
        plan = split_plan(smollm2, [("server-a", 0, 16, "raw"), ("server-b", 16, 32, "raw")])
        addresses = {worker.name: worker.address for worker in workers}
        deployment = deploy(plan, addresses, max_context=2048, max_sessions=1)
        try:
            answerer = Answerer(deployment)
            with api_server(answerer) as server:
                yield server, answerer, workers
        finally:
            deployment.close()
    finally:
        stop_workers(workers)


def cpu_s(pid: int) -> float:
    """CPU seconds (user and system) the process `pid` has used: what a stage computed, whatever else
    this host runs meanwhile."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_during_the_prefill_ends_it_before_the_next_stage(chain, stream, caplog):
    caplog.set_level(logging.INFO, logger="partition.api.server")
    server, answerer, (first, second) = chain
    before = cpu_s(second.pid)
    status, reply = request(server, "POST", "/v1/completions", {"prompt": LONG_PROMPT, "max_tokens": 1})
    assert status == 200, reply
    prefill_s = cpu_s(second.pid) - before  # the second stage's part of this prompt (and one token)
    assert prefill_s > 0.5, prefill_s  # long enough to hang up in the middle of the first stage's

    gone, first_before, second_before = (
        float(get_metrics(server).get(GONE, 0)),
        cpu_s(first.pid),
        cpu_s(second.pid),
    )
    body = json.dumps({"prompt": LONG_PROMPT, "max_tokens": 200, "temperature": 0, "stream": stream})
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as client:
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body.encode())
        )
        # hang up once the first stage is a fifth into the prompt
        wait_until(lambda: cpu_s(first.pid) - first_before > prefill_s / 5, "the first stage never computed")
    wait_until(lambda: not (answerer.running or answerer.waiting), "the request did not end")

    assert cpu_s(second.pid) - second_before < prefill_s / 4  # it never got the prompt
    assert float(get_metrics(server)[GONE]) == gone + 1
    said = "before its first token" if stream else "before its answer was whole"
    assert len([r for r in caplog.records if said in r.getMessage()]) == 1, caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text  # one line, no traceback
    # the chain is free: the next request is answered as before
    status, reply = request(server, "POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 3})
    assert status == 200 and reply["usage"]["completion_tokens"] == 3, reply


def test_a_client_that_hangs_up_while_its_session_opens_ends_the_opening(chain):
    """The last stage hangs (stopped), so the chain cannot accept the session: the request waits on the
    opening, which the coordinator gives up on its own only after OPEN_TIMEOUT_S. The client hanging up
    ends it within a few checks, and once the stage is back the chain serves the next request."""
    server, answerer, (_, second) = chain
    gone = float(get_metrics(server).get(GONE, 0))
    body = json.dumps({"prompt": "Hello", "max_tokens": 3, "temperature": 0})
    host, port = server.server_address[:2]
    os.kill(second.pid, signal.SIGSTOP)
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as client:
            client.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body.encode())
            )
            wait_until(lambda: answerer.running, "the request never started")
            time.sleep(0.5)  # it waits on the opening
        hung_up = time.monotonic()
        wait_until(lambda: not (answerer.running or answerer.waiting), "the request did not end")
        ended_s = time.monotonic() - hung_up
    finally:
        os.kill(second.pid, signal.SIGCONT)
    assert ended_s < OPEN_TIMEOUT_S / 6, ended_s  # seen by its checks, not the opening's own deadline
    assert float(get_metrics(server)[GONE]) == gone + 1
    status, reply = request(server, "POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 3})
    assert status == 200 and reply["usage"]["completion_tokens"] == 3, reply
