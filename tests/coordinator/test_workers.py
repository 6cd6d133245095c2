"""The workers `serve --spawn-local` starts (coordinator/workers.py): real processes, stopped at once."""

from partition.coordinator.workers import spawn_missing
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
