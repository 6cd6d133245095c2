"""Real stage workers in their own processes on 127.0.0.1, shared by a test module and stopped after it."""

import pytest

from partition.transport.local import spawn_worker

SERVERS = ("server-a", "server-b", "server-c")


@pytest.fixture(scope="module")
def workers():
    started = {}
    try:
        for name in SERVERS:
            started[name] = spawn_worker(name, extra_args=("--threads", "1"))
        yield {name: worker.address for name, worker in started.items()}
    finally:
        for worker in started.values():
            worker.stop()
