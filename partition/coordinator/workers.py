"""Where the plan's devices are served (deploy): addresses from the cluster file, and local workers
started for `serve --spawn-local` when nothing listens for a device."""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from pathlib import Path

import grpc

from partition.coordinator.cluster_devices import read_devices
from partition.errors import ConfigError
from partition.transport.channels import TransportConfig, auth_metadata, open_blocking_channel
from partition.transport.generated import measure_pb2
from partition.transport.links import probe_method
from partition.types import KV_BUDGET_MIB

log = logging.getLogger(__name__)


def cluster_addresses(path: Path) -> dict[str, str]:
    """device name -> "host:port" for every device of the cluster file that declares an address."""
    return {device.name: device.address for device in read_devices(path) if device.address is not None}


def edge_threads(path: Path) -> int | None:
    """The torch threads the edge device runs with: its `threads` in the cluster file, else the threads
    its profile was measured with; None when the file says neither. The coordinator runs the edge's
    segments, and with other threads than the profile's they cost what the plan did not predict
    (under a CPU quota, more threads only wait for each other)."""
    from partition.artifacts import load_profile

    for device in read_devices(path):
        if device.role != "edge":
            continue
        if device.threads is not None:
            return device.threads
        if isinstance(device.table.get("profile"), str):
            try:
                return load_profile(path.parent / device.table["profile"]).device.threads
            except (ConfigError, OSError):
                return None  # the planner reports a broken profile; serving goes on without it
    return None


def is_listening(address: str, timeout_s: float = 0.5) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


# Seconds a live local worker has to take a connection (HTTP/2's handshake, which gRPC's own threads
# answer in milliseconds, computing or not) before `restart_dead` takes it for one that stopped serving:
# shutting down after a SIGTERM (its listener closed, its open streams given a grace period), or hung.
ANSWER_WAIT_S = 3.0
# Seconds such a worker gets to exit after SIGTERM before it is killed: its own grace (--grace, 5 s) and one.
STOP_WAIT_S = 6.0
# Seconds after a worker failed to start again before the next reload tries it again (each try costs a
# Python start-up): meanwhile it stays away, and a request that needs it is planned around it or ends.
RESTART_BACKOFF_S = 30.0


# Seconds a worker has to say its name: one Probe round trip, which its event loop answers between
# steps (long calls run on its compute thread), on a channel set up for this one call.
NAME_WAIT_S = 2.0


def worker_name_at(address: str, config: TransportConfig, timeout_s: float = NAME_WAIT_S) -> str:
    """The --name of the worker serving at `address`, from one Probe with `config`'s TLS and token.
    Raises grpc.RpcError when it does not answer (UNAVAILABLE, DEADLINE_EXCEEDED, UNAUTHENTICATED...)."""
    channel = open_blocking_channel(address, config)
    try:
        replies = probe_method(channel)(
            iter([measure_pb2.ProbeRequest()]), timeout=timeout_s, metadata=auth_metadata(config)
        )
        return next(replies).worker
    finally:
        channel.close()


def takes_connections(address: str, timeout_s: float) -> bool:
    """Whether a gRPC server at `address` completes a connection within `timeout_s` (plaintext: the
    workers `--spawn-local` starts have no TLS)."""
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def kv_budget_mib(plan, max_context: int, max_sessions: int) -> int:
    """MiB of KV cache the largest of the plan's remote segments needs for `max_sessions` sessions of
    `max_context` tokens, in fp32 (the widest a worker runs), and a worker's default at least: what the
    workers `--spawn-local` starts may preallocate, since serve, not their user, starts them."""
    from partition.coordinator.deploy import plan_model
    from partition.coordinator.topology import split_plan

    spec = plan_model(plan).spec
    blocks = max((len(s.segment.blocks(spec.n_blocks)) for s in split_plan(plan).remote), default=0)
    need = blocks * spec.kv_bytes_per_token(4) * max_context * max_sessions
    return max(KV_BUDGET_MIB, math.ceil(need / 2**20))


def spawn_missing(
    devices: list[str], addresses: dict[str, str], model: str, threads: int = 0, kv_budget_mib: int = 0
) -> SpawnedWorkers:
    """Start a local worker for each device with no address or nothing listening at it, all at once (with
    `kv_budget_mib`, each may preallocate that much KV cache). Something listening that takes no gRPC
    connection (another program on the port, or a hung worker) is a ConfigError: no worker can start there.

    Updates `addresses` in place and returns the workers started (the caller stops them)."""
    extra: tuple[str, ...] = ()
    model_path = Path(model)
    if model_path.exists():  # a path: let the worker read inside its directory, nothing else
        extra = ("--models-dir", str(model_path.resolve().parent))
    if threads:
        extra += ("--threads", str(threads))
    if kv_budget_mib:
        extra += ("--kv-budget-mb", str(kv_budget_mib))
    missing = {}  # device -> the address its worker is to listen at
    for device in devices:
        address = addresses.get(device)
        if address is not None and is_listening(address):
            if not takes_connections(address, ANSWER_WAIT_S):
                raise ConfigError(
                    f"device {device!r}: something listens at {address} but takes no gRPC connection "
                    "(another program holds the port, or a worker there hangs); stop it, or give the "
                    "device another address in the cluster file"
                )
            continue
        missing[device] = address or "127.0.0.1:0"
    spawned = SpawnedWorkers(extra)
    for worker in spawned.start(missing):
        addresses[worker.name] = worker.address
    return spawned


class SpawnedWorkers:
    """The local workers `--spawn-local` started. One that died or stopped serving is started again at
    its address by `restart_dead` (serve calls it before it gives the workers their segments again)."""

    def __init__(self, extra_args: tuple[str, ...] = ()) -> None:
        self.workers: list = []  # partition.transport.local.LocalWorker
        self._extra_args = extra_args
        self._lock = threading.Lock()  # restarts (request threads) against stop (serve's end)
        self._stopped = False
        self._failed_at: dict[str, float] = {}  # device -> monotonic time its last start again failed

    def start(self, addresses: dict[str, str]) -> list:
        """Start a worker per device at its host:port, all at once; if one does not start, none runs on
        (WorkerStartError)."""
        from partition.transport.local import spawn_workers

        started = spawn_workers(list(addresses), extra_args=self._extra_args, addresses=addresses)
        for worker in started:
            log.info("started local worker %s at %s (pid %d)", worker.name, worker.address, worker.pid)
        self.workers += started
        return started

    def restart_dead(self) -> None:
        """Start every worker that stopped serving again at its address, all at once: one that exited,
        and one that lives on without taking connections (stopped first). One that does not start stays
        away (its log stays here: it has local paths), and is tried again after RESTART_BACKOFF_S; the
        reload then fails for it as for any worker away. StageCallError (UNAVAILABLE) when serve is
        stopping."""
        from partition.transport.client import StageCallError
        from partition.transport.local import start_each, stop_workers

        with self._lock:
            now = time.monotonic()
            due = [
                worker
                for worker in self.workers
                if now - self._failed_at.get(worker.name, -math.inf) >= RESTART_BACKOFF_S
                and not self._serving(worker)
            ]
            if due and self._stopped:
                raise StageCallError(
                    grpc.StatusCode.UNAVAILABLE, "serve is stopping", due[0].address, due[0].name
                )
            hung = [worker for worker in due if worker.alive()]
            for worker in hung:
                log.warning(
                    "local worker %s (pid %d) takes no connections at %s; stopping it",
                    worker.name, worker.pid, worker.address,
                )  # fmt: skip
            stop_workers(hung, STOP_WAIT_S, keep_log=True)  # its log says why, as a dead one's
            for worker in due:
                # a code of ours (-9 for a hung one) is not taken for how it died
                ended = "was stopped here, code" if worker in hung else "exited with"
                log.warning(
                    "local worker %s (pid %d) %s %s (its log is kept at %s); starting it again at %s",
                    worker.name, worker.pid, ended, worker.process.returncode, worker.log_path, worker.address,
                )  # fmt: skip
            # Each spends its start importing torch, so together they come back in about one's time.
            started, failed = start_each({worker.name: worker.address for worker in due}, self._extra_args)
            for worker in started:
                log.info("started local worker %s at %s (pid %d)", worker.name, worker.address, worker.pid)
                self._failed_at.pop(worker.name, None)
            for name, error in failed.items():
                log.error(
                    "local worker %s did not start again (next try in %.0f s): %s",
                    name,
                    RESTART_BACKOFF_S,
                    error,
                )
                self._failed_at[name] = time.monotonic()
            # A failed one stays listed: the next try needs its address.
            back = {worker.name for worker in started}
            self.workers = [worker for worker in self.workers if worker.name not in back] + started

    @staticmethod
    def _serving(worker) -> bool:
        return worker.alive() and takes_connections(worker.address, ANSWER_WAIT_S)

    def stop(self) -> None:
        """Stop every worker, all at once: each takes about half a second to exit after SIGTERM."""
        from partition.transport.local import stop_workers

        with self._lock:
            self._stopped = True
            stop_workers(self.workers)
