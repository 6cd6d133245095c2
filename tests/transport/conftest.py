"""Real `partition worker` processes on 127.0.0.1 for the transport tests; always stopped by pid."""

from __future__ import annotations

import pytest

from partition.transport.local import spawn_worker, stop_workers
from tests.model.checkpoints import save_tiny_hf


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    save_tiny_hf("llama", root / "tiny")
    return root


def _spawner(models_dir, log_dir):
    started = []

    def start(name: str, *extra_args: str):
        args = ("--models-dir", str(models_dir), "--threads", "1", *extra_args)
        worker = spawn_worker(name, extra_args=args, log_dir=log_dir)
        started.append(worker)
        return worker

    return start, started


@pytest.fixture(scope="module")
def start_worker(models_dir, tmp_path_factory):
    """start_worker(name, *extra_args) -> LocalWorker; the module's workers are stopped after it."""
    start, started = _spawner(models_dir, tmp_path_factory.mktemp("worker-logs"))
    yield start
    stop_workers(started)


@pytest.fixture(scope="session")
def chain_workers(models_dir, tmp_path_factory):
    """Three plain workers a, b, c shared by the chain and error tests (each test deploys what it needs)."""
    start, started = _spawner(models_dir, tmp_path_factory.mktemp("chain-logs"))
    yield [start(name) for name in ("a", "b", "c")]
    stop_workers(started)
