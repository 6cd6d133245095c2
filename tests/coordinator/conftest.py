"""Real stage workers in their own processes on 127.0.0.1, shared by a test module and stopped after it."""

import pytest

from partition.transport.local import spawn_workers, stop_workers

SERVERS = ("server-a", "server-b", "server-c")


@pytest.fixture(scope="module")
def workers():
    started = spawn_workers(list(SERVERS), extra_args=("--threads", "1"))
    try:
        yield {worker.name: worker.address for worker in started}
    finally:
        stop_workers(started)
