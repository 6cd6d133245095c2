"""Start stage workers as local processes (deploy on one machine: `serve --spawn-local`, tests, benchmarks).

worker = spawn_worker("stage-a", models_dir=Path("models"))
...                      # talk to worker.address
worker.stop()            # SIGTERM, wait for the graceful shutdown, kill only if it hangs
a, b = spawn_workers(["stage-a", "stage-b"])   # started at once: about the time of one
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import partition
from partition.errors import PartitionError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # seconds for a worker to import torch and bind its port
# The folder that holds the folders of workers started without a log_dir (unset: the system's temporary
# folder); the processes they start inherit it. The test suite points it at one of its own.
WORKERS_DIR_ENV = "PARTITION_WORKERS_DIR"


class WorkerStartError(PartitionError):
    """A local worker process exited or did not come up in time."""


@dataclass
class LocalWorker:
    name: str
    address: str  # host:port it serves on
    process: subprocess.Popen
    log_path: Path  # its stderr and stdout
    # The temporary folder made for it when the caller named no log_dir: removed once the worker
    # exits cleanly, kept (and named in a warning) when it did not, so its log can be read.
    scratch_dir: Path | None = None
    _terminated: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0, keep_log: bool = False) -> int:
        """SIGTERM, wait up to `timeout_s` for the graceful shutdown, then SIGKILL; the exit code. Its
        temporary folder is removed after a clean exit, unless `keep_log`."""
        if self.alive():
            self.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "worker %s (pid %d) ignored SIGTERM for %.0f s; killing it",
                    self.name,
                    self.pid,
                    timeout_s,
                )
                self.process.kill()
        code = self.process.wait()
        self._close_stdin()
        if not keep_log:
            self._tidy(code)
        return code

    def _close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()

    def _tidy(self, code: int) -> None:
        if self.scratch_dir is None:
            return
        if code == 0:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
        else:
            log.warning(
                "worker %s exited with code %d; its log is kept at %s", self.name, code, self.log_path
            )
        self.scratch_dir = None

    def terminate(self) -> None:
        """Send SIGTERM once, without waiting (stop_workers stops many at once)."""
        # A second SIGTERM could land after the worker removed its handler and kill it uncleanly.
        if self.alive() and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def spawn_worker(
    name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    extra_args: tuple[str, ...] = (),
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> LocalWorker:
    """Start `partition worker` in a new process and wait until it serves; extra_args go to the CLI."""
    return _Starting(name, host, port, extra_args, log_dir, env).serving()


def spawn_workers(
    names: list[str],
    extra_args: tuple[str, ...] = (),
    addresses: dict[str, str] | None = None,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> list[LocalWorker]:
    """Start a worker per name, all at once, and wait until every one serves; in the order of `names`.
    Each spends its start importing torch, so N together start in far less than N times one's start
    (on a two-core host one took 1.5 s; two 2.5 s one after the other, 1.3 s at once; three 3.6-4.1 s
    and 2.0 s). `addresses` gives
    a name its host:port (the others: 127.0.0.1, a free port). When one does not start, the others are
    stopped and its WorkerStartError raised."""
    addresses = addresses or {}
    starting: list[_Starting] = []
    served: list[LocalWorker] = []
    try:
        for name in names:
            host, _, port = addresses.get(name, "127.0.0.1:0").rpartition(":")
            starting.append(_Starting(name, host, int(port), extra_args, log_dir, env))
        for start in starting:
            served.append(start.serving())
    except BaseException:
        for start in starting[len(served) :]:
            start.abandon()
        stop_workers(served)
        raise
    return served


def start_each(
    addresses: dict[str, str], extra_args: tuple[str, ...] = ()
) -> tuple[list[LocalWorker], dict[str, WorkerStartError]]:
    """Start a worker per name at its host:port, all at once, each on its own: the ones that serve, and
    why each other did not (its log kept). Where `spawn_workers` gives up on all when one fails, this is
    for starting lost workers again, where each one back is worth having."""
    pending: list[_Starting] = []  # launched, not yet waited for
    served: list[LocalWorker] = []
    failed: dict[str, WorkerStartError] = {}
    try:
        for name, address in addresses.items():
            host, _, port = address.rpartition(":")
            try:
                pending.append(_Starting(name, host, int(port), extra_args, None, None))
            except WorkerStartError as error:  # no folder for its log
                failed[name] = error
        while pending:
            start = pending.pop(0)  # one that is interrupted while waited for abandons itself
            try:
                served.append(start.serving())
            except WorkerStartError as error:
                failed[start.name] = error
    except BaseException:  # Ctrl-C: nothing started here runs on
        for start in pending:
            start.abandon()
        stop_workers(served)
        raise
    return served, failed


class _Starting:
    """A worker process launched and not yet known to serve: `serving()` waits for its ready file."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        extra_args: tuple[str, ...],
        log_dir: Path | None,
        env: dict[str, str] | None,
    ) -> None:
        self.name = name
        parent = log_dir or os.environ.get(WORKERS_DIR_ENV) or None
        try:
            if parent is not None:
                Path(parent).mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=f"partition-worker-{name}-", dir=parent))
        except OSError as error:
            where = (
                f"{parent} ({'log_dir' if log_dir else WORKERS_DIR_ENV})"
                if parent
                else "the temporary folder"
            )
            raise WorkerStartError(
                f"cannot make a folder for worker {name}'s log in {where}: {error.strerror}; "
                "point it at a folder this user can write"
            ) from None
        self.scratch_dir = workdir if log_dir is None else None
        self.ready = workdir / "ready.json"
        self.log_path = workdir / "worker.log"
        command = [
            sys.executable,
            "-m",
            "partition",
            "-v",
            "worker",
            "--listen",
            f"{host}:{port}",
            "--name",
            name,
        ]
        # Its stdin is a pipe only this process writes to: the worker stops when it closes, so it does not
        # outlive this process even when it is killed with SIGKILL and no `finally` runs.
        command += ["--ready-file", str(self.ready), "--stop-when-stdin-closes", *extra_args]
        # The child imports the same `partition` as this process, whatever the working directory.
        source_root = str(Path(partition.__file__).resolve().parents[1])
        python_path = os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH", "")) if p)
        child_env = {**os.environ, "PYTHONPATH": python_path, **(env or {})}
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, env=child_env
            )
        self.deadline = time.monotonic() + START_TIMEOUT_S
        self.failed = False  # it did not start: its folder is kept, for the log its error names

    def serving(self) -> LocalWorker:
        """The worker, once it serves; WorkerStartError (it is killed, its log kept) when it exits or
        does not serve within START_TIMEOUT_S of its launch."""
        try:
            while not self.ready.exists():
                if self.process.poll() is not None:
                    raise WorkerStartError(
                        f"worker {self.name} exited with code {self.process.returncode} before serving; "
                        "its log:\n" + self.log_path.read_text(errors="replace")[-4000:]
                    )
                if time.monotonic() > self.deadline:
                    raise WorkerStartError(
                        f"worker {self.name} did not serve within {START_TIMEOUT_S:g} s; log: {self.log_path}"
                    )
                time.sleep(0.05)
        except WorkerStartError:
            self.failed = True
            self._kill()
            raise
        except BaseException:  # Ctrl-C came first: nothing of it runs on, and no log to read
            self.abandon()
            raise
        info = json.loads(self.ready.read_text())
        return LocalWorker(self.name, info["address"], self.process, self.log_path, self.scratch_dir)

    def abandon(self) -> None:
        """Kill it before it served, its temporary folder with it unless it failed to start."""
        self._kill()
        if self.scratch_dir is not None and not self.failed:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def _kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if not self.process.stdin.closed:
            self.process.stdin.close()


def stop_workers(workers: list[LocalWorker], timeout_s: float = 10.0, keep_log: bool = False) -> list[int]:
    """SIGTERM every worker at once, then wait for each (killing any that hangs); their exit codes."""
    for worker in workers:
        worker.terminate()
    return [worker.stop(timeout_s, keep_log) for worker in workers]
