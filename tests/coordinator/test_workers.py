"""The workers `serve --spawn-local` starts (coordinator/workers.py): real processes, stopped at once."""

import logging
import os
import signal
import socket

from partition.coordinator.workers import spawn_missing, worker_name_at
from partition.transport import local
from partition.transport.channels import TransportConfig
from partition.transport.local import WORKERS_DIR_ENV, LocalWorker


def test_the_workers_started_for_serve_are_stopped_all_at_once(tmp_path, monkeypatch):
    """Each worker takes about half a second to exit after SIGTERM: serve's end sends it to every one
    before it waits for any."""
    monkeypatch.setenv(WORKERS_DIR_ENV, str(tmp_path))
    addresses: dict[str, str] = {}
    spawned = spawn_missing(["server-a", "server-b"], addresses, "smollm2-135m", threads=1)
    assert sorted(addresses) == ["server-a", "server-b"] and all(w.alive() for w in spawned.workers)

    terminated_by_each_wait = []
    stop = LocalWorker.stop

    def counted(self, *args, **kwargs):  # how many were sent SIGTERM when a wait for one begins
        terminated_by_each_wait.append(sum(worker._terminated for worker in spawned.workers))
        return stop(self, *args, **kwargs)

    monkeypatch.setattr(LocalWorker, "stop", counted)
    spawned.stop()
    assert terminated_by_each_wait == [2, 2]
    assert [worker.process.returncode for worker in spawned.workers] == [0, 0]  # graceful exits
    assert list(tmp_path.iterdir()) == []  # and their folders removed


def test_workers_that_died_are_started_again_at_their_addresses_all_at_once(tmp_path, monkeypatch, caplog):
    """Two workers killed: both are launched again before either is waited for (each start is mostly
    torch's import), at the addresses the plan's other stages reach them by. One whose port another
    program took stays away, logged and tried again only after the backoff, and does not keep the
    other from coming back."""
    monkeypatch.setenv(WORKERS_DIR_ENV, str(tmp_path))
    addresses: dict[str, str] = {}
    spawned = spawn_missing(["server-a", "server-b"], addresses, "smollm2-135m", threads=1)
    try:
        launched_by_each_wait = []
        launch, serving = local._Starting.__init__, local._Starting.serving

        def counted_launch(self, *args, **kwargs):
            launch(self, *args, **kwargs)
            launched.append(self.name)

        def counted_serving(self):  # how many were launched when a wait for one begins
            launched_by_each_wait.append(len(launched))
            return serving(self)

        monkeypatch.setattr(local._Starting, "__init__", counted_launch)
        monkeypatch.setattr(local._Starting, "serving", counted_serving)

        launched: list[str] = []
        for worker in spawned.workers:
            os.kill(worker.pid, signal.SIGKILL)
            worker.process.wait()
        spawned.restart_dead()
        assert launched_by_each_wait == [2, 2]
        assert sorted((w.name, w.address) for w in spawned.workers) == sorted(addresses.items())
        for name, address in addresses.items():
            assert worker_name_at(address, TransportConfig()) == name

        # server-a killed again, and its port taken by a program that is not a worker
        launched, launched_by_each_wait[:] = [], []
        server_a = next(w for w in spawned.workers if w.name == "server-a")
        os.kill(server_a.pid, signal.SIGKILL)
        server_a.process.wait()
        host, _, port = addresses["server-a"].rpartition(":")
        with socket.socket() as squatter:
            squatter.bind((host, int(port)))
            squatter.listen()
            spawned.restart_dead()
            assert launched == ["server-a"]
            assert server_a in spawned.workers  # still listed: the next try needs its address
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert len(said) == 1 and said[0].startswith("local worker server-a did not start again")
            assert "the port is in use" in said[0]  # the worker's own line, from its log
            spawned.restart_dead()  # within the backoff: not tried again
            assert launched == ["server-a"]
        assert worker_name_at(addresses["server-b"], TransportConfig()) == "server-b"
    finally:
        spawned.stop()
