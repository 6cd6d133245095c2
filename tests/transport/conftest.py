"""Real `partition worker` processes on 127.0.0.1 for the transport tests; always stopped by pid."""

from __future__ import annotations

import pytest

from partition.transport.local import spawn_worker
from tests.model.checkpoints import save_tiny_hf


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    save_tiny_hf("llama", root / "tiny")
    return root


@pytest.fixture(scope="module")
def start_worker(models_dir, tmp_path_factory):
    """start_worker(name, *extra_args) -> LocalWorker; every worker started is stopped at the end."""
    started = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def start(name: str, *extra_args: str):
        args = ("--models-dir", str(models_dir), "--threads", "1", *extra_args)
        worker = spawn_worker(name, extra_args=args, log_dir=logs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def chain_workers(start_worker):
    """Three plain workers a, b, c for chain tests (reloaded by each test as it needs)."""
    return [start_worker(name) for name in ("a", "b", "c")]
