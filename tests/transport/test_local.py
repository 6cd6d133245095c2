"""Local worker processes (serve --spawn-local, tests, benchmarks) leave no temporary folder behind
when they exit cleanly, and keep the log of one that did not; several start at once."""

import os
import shutil
import signal
from pathlib import Path

import pytest

from partition.transport.local import (
    WORKERS_DIR_ENV,
    WorkerStartError,
    spawn_worker,
    spawn_workers,
    stop_workers,
)


def test_a_clean_stop_removes_the_workers_temporary_folder():
    worker = spawn_worker("tidy", extra_args=("--threads", "1"))
    folder = worker.log_path.parent
    assert folder.is_dir() and worker.log_path.exists()
    assert worker.stop() == 0
    assert not folder.exists()


def test_a_killed_worker_keeps_its_log():
    worker = spawn_worker("killed", extra_args=("--threads", "1"))
    folder = worker.log_path.parent
    try:
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.stop() == -signal.SIGKILL
        assert worker.log_path.exists() and "serving" in worker.log_text().lower()
        assert folder.parent == Path(os.environ["PARTITION_WORKERS_DIR"])  # the session's, not /tmp's
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_worker_stops_gracefully_once_the_process_that_started_it_lets_go_of_its_stdin():
    # what the kernel does to the pipe when serve is killed with SIGKILL and no `finally` runs
    worker = spawn_worker("orphan", extra_args=("--threads", "1"))
    folder = worker.log_path.parent
    try:
        worker.process.stdin.close()
        assert worker.process.wait(timeout=30) == 0  # drained and stopped, not killed
        assert "standard input closed" in worker.log_text()
    finally:
        worker.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_workers_folder_that_is_not_there_yet_is_made_and_one_that_cannot_be_is_named(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(WORKERS_DIR_ENV, str(tmp_path / "not" / "yet"))
    worker = spawn_worker("made", extra_args=("--threads", "1"))
    assert worker.log_path.parent.parent == tmp_path / "not" / "yet"
    assert worker.stop() == 0

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(WORKERS_DIR_ENV, str(tmp_path / "a-file" / "below"))
    with pytest.raises(
        WorkerStartError, match=f"in {tmp_path}/a-file/below \\({WORKERS_DIR_ENV}\\): Not a directory"
    ):
        spawn_worker("unmade", extra_args=("--threads", "1"))


def test_ctrl_c_while_a_worker_starts_leaves_neither_its_process_nor_its_folder(tmp_path, monkeypatch):
    import subprocess
    import time
    from types import SimpleNamespace

    import partition.transport.local as local

    started = []

    def recorded(*args, **kwargs):
        started.append(subprocess.Popen(*args, **kwargs))
        return started[-1]

    def interrupted(_seconds: float) -> None:  # where Ctrl-C lands: the wait for the worker to serve
        raise KeyboardInterrupt

    # the module's own names only: the rest of this process keeps the real sleep and Popen
    monkeypatch.setenv(WORKERS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(
        local, "subprocess", SimpleNamespace(Popen=recorded, PIPE=subprocess.PIPE, STDOUT=subprocess.STDOUT)
    )
    monkeypatch.setattr(local, "time", SimpleNamespace(monotonic=time.monotonic, sleep=interrupted))
    with pytest.raises(KeyboardInterrupt):
        spawn_worker("interrupted", extra_args=("--threads", "1"))
    (process,) = started
    assert process.returncode == -signal.SIGKILL  # killed and reaped, not left to finish starting
    assert list(tmp_path.iterdir()) == []


def test_a_worker_that_exits_before_serving_is_named_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKERS_DIR_ENV, str(tmp_path))
    with pytest.raises(WorkerStartError, match=r"worker refused exited with code 2 before serving") as failed:
        spawn_worker("refused", extra_args=("--threads", "-1"))
    assert "argument --threads: must be 0" in str(failed.value)  # its log, in the message
    (folder,) = tmp_path.iterdir()  # kept with the log it names
    assert (folder / "worker.log").exists()


def test_workers_start_at_once_and_one_that_cannot_start_takes_the_others_down(tmp_path, monkeypatch):
    import socket

    import psutil

    import partition.transport.local as local

    def workers_here() -> set[int]:
        return {p.pid for p in psutil.Process().children(recursive=True) if "--ready-file" in p.cmdline()}

    others = workers_here()  # the suite's workers that serve other tests meanwhile

    def starting() -> list[int]:
        return sorted(workers_here() - others)

    launched_by_each_wait = []
    wait = local._Starting.serving

    def counted(self):  # how many are launched when a wait for one to serve begins
        launched_by_each_wait.append(len(starting()))
        return wait(self)

    monkeypatch.setenv(WORKERS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(local._Starting, "serving", counted)
    first, second = spawn_workers(["first", "second"], extra_args=("--threads", "1"))
    try:
        assert (first.name, second.name) == ("first", "second") and first.address != second.address
        assert first.alive() and second.alive()
        assert launched_by_each_wait == [2, 2]  # the second was launched before the first served
    finally:
        assert stop_workers([first, second]) == [0, 0]
    assert list(tmp_path.iterdir()) == []

    with socket.socket() as taken:  # a port held by another program: that worker cannot listen
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(WorkerStartError, match="worker blocked exited with code"):
            spawn_workers(
                ["before", "blocked", "after"], extra_args=("--threads", "1"), addresses={"blocked": address}
            )
    assert starting() == []  # the one that served is stopped, the one still starting killed
    (folder,) = tmp_path.iterdir()  # only the failed one's, kept with the log its error names
    assert folder.name.startswith("partition-worker-blocked-")
