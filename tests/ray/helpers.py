"""Helpers for the Ray tests: ports, the CLI as a child process, its output, the cluster's stage actors."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]
NODE_OBJECT_STORE_BYTES = 80 * 2**20  # bytes; Ray refuses stores under ~75 MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def partition(*args: str) -> list[str]:
    return [sys.executable, "-m", "partition", *args]


class Output:
    """A child's stdout read on a thread, so tests can wait for it with a timeout."""

    def __init__(self, stream) -> None:
        self._chunks: queue.Queue = queue.Queue()
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        while chunk := os.read(stream.fileno(), 4096):
            self._chunks.put(chunk.decode(errors="replace"))
        self._chunks.put(None)

    def wait_for(self, predicate, timeout_s: float) -> bool:
        """Collect output until predicate(text) holds (True) or the stream ends or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.text):
            try:
                chunk = self._chunks.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if chunk is None:
                return predicate(self.text)
            self.text += chunk
        return True


def stage_actors() -> dict[str, dict]:
    """device -> info() of every live stage actor in the cluster this process is connected to, with its
    name and namespace."""
    import ray

    found = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if not entry["name"].startswith("partition-"):
            continue
        try:
            actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
            info = ray.get(actor.info.remote(), timeout=10)
        except (ValueError, ray.exceptions.RayError):  # gone meanwhile
            continue
        found[info["device"]] = {**info, **entry}
    return found


def wait_gone(pids: list[int], timeout_s: float = 20.0) -> list[int]:
    """The pids still running (not zombies) after up to `timeout_s`."""

    deadline = time.monotonic() + timeout_s
    while True:
        alive = [pid for pid in pids if _running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def stop_process(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
