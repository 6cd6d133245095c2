"""Place a plan's remote stages on a Ray cluster (deploy, serve under Ray).

Each remote stage of the plan gets one stage actor (partition/ray/actor.py) on a node that advertises
the custom resource `device:<name>` of its device. The actors start the ordinary gRPC stage servers;
the coordinator (this process, the job's driver, on the edge) then deploys the plan on their
addresses and serves as usual. Ray places and supervises; activations go over the gRPC chain. A stage
actor that dies is started again on its node at the same address when serve asks (`restart_dead`,
before it reloads the workers), so a request under way resumes as with any restarted worker. A device
planned around because its node went away gets a new actor once a node advertises it again (`revive`,
when serve looks for devices back): a node that returns is a new node to Ray.

    with ray_stages(plan, "auto") as stages:        # ray.init, one actor per remote stage, addresses
        deployment = deploy(plan, stages.addresses, stages.transport)
        ...                                         # errors name the stage's device and node
    # every actor stopped (killed if it does not stop), the driver disconnected if it connected here

Nothing waits forever: a device no node advertises fails at once, with the resources the cluster
has; an actor Ray cannot start in `start_timeout_s` fails naming the device and its nodes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from partition.coordinator.topology import split_plan
from partition.coordinator.workers import is_listening
from partition.errors import ConfigError, PartitionError
from partition.ray.actor import StageActor, StageOptions
from partition.types import Plan

log = logging.getLogger(__name__)

RESOURCE_PREFIX = "device:"  # a node serves device NAME when it advertises resource "device:NAME"
# A stage asks for a sliver of its device's resource: placement only, so that a second job on the same
# cluster is not blocked by the first (it competes for CPUs instead, which Ray accounts for).
DEVICE_SHARE = 0.01
START_TIMEOUT_S = 120.0  # seconds for Ray to place every actor and for each to import torch and bind
STOP_TIMEOUT_S = 15.0  # seconds for the actors to stop gracefully before they are killed
CONNECT_TIMEOUT_S = 5.0  # seconds for the GCS address to accept a TCP connection
DEATH_NOTICE_S = 5.0  # seconds to let Ray report a dead actor after a broken connection
RESTART_BACKOFF_S = 30.0  # seconds after a stage failed to start again before the next try
# A device back in the cluster gets a new actor (revive). The look that starts it waits REVIVE_WAIT_S
# for it, since requests wait meanwhile (a take-back holds them); one still starting is picked up by a
# later look, which does not wait. One not started after REVIVE_TIMEOUT_S (as long as a first start) is
# killed, and the device gets its next actor at the first look REVIVE_TIMEOUT_S after that.
REVIVE_WAIT_S = 15.0
REVIVE_TIMEOUT_S = START_TIMEOUT_S
# gRPC codes that mean "the peer went away": worth waiting for Ray to say which actor died
_CONNECTION_CODES = {"UNAVAILABLE", "CANCELLED", "ABORTED", "DEADLINE_EXCEEDED", "INTERNAL"}


class RayStageError(PartitionError):
    """A stage actor could not be placed, did not start, failed, or died; names the device and node."""


@dataclass(frozen=True)
class Placement:
    """Where Ray put one stage."""

    device: str
    name: str  # the actor's name in the Ray cluster (`ray list actors`)
    address: str  # host:port of its gRPC stage server
    node_id: str  # hex id of the Ray node
    node_ip: str
    actor_id: str
    pid: int  # of the actor process, on its node

    def where(self) -> str:
        return f"Ray actor {self.name} on node {self.node_ip} ({self.node_id[:12]})"


def device_nodes() -> dict[str, list[dict]]:
    """device name -> the alive nodes (ray.nodes() entries) advertising `device:<name>`."""
    import ray

    by_device: dict[str, list[dict]] = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        for key, amount in node.get("Resources", {}).items():
            if key.startswith(RESOURCE_PREFIX) and amount > 0:
                by_device.setdefault(key[len(RESOURCE_PREFIX) :], []).append(node)
    return by_device


class RayStages:
    """The stage actors of one plan: start them, explain failures in terms of devices, stop them."""

    def __init__(
        self, edge: str, transport, options: dict[str, StageOptions], spare: Iterable[str] = ()
    ) -> None:
        self.edge = edge  # the device whose node should run this process (the coordinator)
        self.spare = set(spare)  # devices of `options` started for re-plans only: best effort
        self.transport = transport  # TransportConfig the coordinator uses to reach the actors
        self._options = options  # device -> StageOptions, chain order
        self._actors: dict[str, object] = {}  # device -> ActorHandle
        self._done: dict[str, object] = {}  # device -> ObjectRef of wait_stopped()
        self._names: dict[str, str] = {}  # device -> its actor's name in the Ray cluster
        self._cpus = 1.0  # CPUs each actor asks for (set by start)
        self._restart_failed: dict[str, tuple[float, str]] = {}  # device -> (monotonic time, why)
        self._reviving: dict[str, tuple[object, float]] = {}  # device -> (ObjectRef of info, launched at)
        self._revive_failed: dict[str, float] = {}  # device -> monotonic time its last new actor was killed
        self._lock = threading.Lock()  # restart_dead (request threads) against stop
        self._stopped = False
        self.placements: dict[str, Placement] = {}

    @property
    def addresses(self) -> dict[str, str]:
        return {device: p.address for device, p in self.placements.items()}

    def start(self, cpus: float, start_timeout_s: float = START_TIMEOUT_S) -> None:
        import ray

        nodes = device_nodes()
        missing = [device for device in self._options if device not in nodes]
        if missing:
            raise RayStageError(_missing_message(missing, nodes))
        _check_edge(self.edge, nodes)
        self._cpus = cpus
        infos = {device: self._launch(device, options) for device, options in self._options.items()}
        ready, _ = ray.wait(list(infos.values()), num_returns=len(infos), timeout=start_timeout_s)
        for device, ref in infos.items():
            if device in self.spare:  # best effort: the plan does without it
                self._start_spare(device, ref if ref in ready else None)
                continue
            if ref not in ready:
                raise RayStageError(
                    f"Ray did not start the stage actor for device {device!r} within {start_timeout_s:g} s: "
                    f"it needs {cpus:g} CPU(s) on a node advertising {RESOURCE_PREFIX}{device}: "
                    f"{_node_list(nodes[device], cpus=True)}. Are their CPUs taken by other work? "
                    "(`ray status` shows pending demands; --threads sets the CPUs a stage asks for)"
                )
            try:
                self._placed(device, ray.get(ref))
            except ray.exceptions.RayError as error:
                raise RayStageError(
                    f"the stage actor for device {device!r} failed to start on "
                    f"{_node_list(nodes[device])}: {_short(error)}"
                ) from None

    def _start_spare(self, device: str, ready_ref) -> None:
        """Place the spare actor of `device` when it started (`ready_ref`); else kill it, say so, and
        leave the device out (no address: a re-plan treats it as away)."""
        if not self._place_started(
            device, ready_ref, "spare stage %s did not start (%s): re-plans go without it"
        ):
            del self._actors[device]

    def _place_started(self, device: str, ready_ref, failure: str) -> bool:
        """Place the new actor of `device` when it started (`ready_ref`, None if not in time); else kill
        it and log `failure` % (device, why). Whether it was placed."""
        import ray

        try:
            if ready_ref is None:
                raise TimeoutError("it did not start in time")
            self._placed(device, ray.get(ready_ref))
            return True
        except (ray.exceptions.RayError, TimeoutError) as error:
            ray.kill(self._actors[device], no_restart=True)
            log.warning(failure, device, _short(error))
            return False

    def restart_dead(self, start_timeout_s: float = START_TIMEOUT_S) -> None:
        """Start every dead stage again on the node it ran on, listening at the same port, so that the
        coordinator reloads it where the old one was and the request under way resumes
        (coordinator/resume.py). A stage whose node is gone, or that cannot start there (its port taken,
        no CPU free within `start_timeout_s`), stays dead: the request then ends naming it and why, and
        the next try waits RESTART_BACKOFF_S."""
        import ray

        with self._lock:
            if self._stopped:
                return
            dead = self.dead(DEATH_NOTICE_S)
            alive_nodes = {node["NodeID"] for node in ray.nodes() if _raylet_answers(node)}
            for device, why in dead.items():
                if device in self._reviving:  # planned around, and its new actor is starting elsewhere
                    continue
                old = self.placements[device]
                failed = self._restart_failed.get(device)
                if failed is not None and time.monotonic() - failed[0] < RESTART_BACKOFF_S:
                    continue
                if old.node_id not in alive_nodes:
                    self._restart_failed[device] = (time.monotonic(), "its node is gone")
                    log.warning("stage %s (%s) died with its node: not started again", device, old.where())
                    continue
                log.warning("stage %s (%s) died (%s): starting it again there", device, old.where(), why)
                self._start_again(device, old, start_timeout_s)

    def revive(
        self,
        devices: Iterable[str],
        wait_s: float = REVIVE_WAIT_S,
        start_timeout_s: float = REVIVE_TIMEOUT_S,
    ) -> dict[str, str]:
        """Start a new stage actor for each of `devices` (planned around) that has none serving, on a
        node that advertises the device now, at any port. device -> address of each one that started.

        Waits up to `wait_s` for the actors this call launches, and not at all for those an earlier call
        launched (they are taken when they have started). One not started `start_timeout_s` after its
        launch is killed (logged), and its device gets no new one for as long again."""
        import ray

        with self._lock:
            if self._stopped:
                return {}
            dead = self.dead()
            advertised = device_nodes()
            now = time.monotonic()
            wanted = [
                device
                for device in sorted(devices)
                if device in self._options
                and device not in self._reviving
                and now - self._revive_failed.get(device, -math.inf) >= start_timeout_s
                and (device in dead or device not in self.placements)
                and advertised.get(device)
            ]
            for device in wanted:
                if device in self._actors:  # dead: make sure Ray never starts it again behind our back
                    ray.kill(self._actors[device], no_restart=True)
                self._reviving[device] = (self._launch(device, self._options[device]), now)
            launched = [self._reviving[device][0] for device in wanted]
            if launched:
                ray.wait(launched, num_returns=len(launched), timeout=wait_s)
            if not self._reviving:
                return {}
            refs = [ref for ref, _ in self._reviving.values()]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            started = {}
            for device, (ref, launched_at) in list(self._reviving.items()):
                if ref not in ready and time.monotonic() - launched_at < start_timeout_s:
                    continue  # still starting: a later look takes it
                del self._reviving[device]
                failure = "stage %s is back in the cluster, but its actor did not start (%s)"
                if self._place_started(device, ref if ref in ready else None, failure):
                    self._restart_failed.pop(device, None)
                    self._revive_failed.pop(device, None)
                    started[device] = self.placements[device].address
                    log.warning("stage %s is back: %s", device, self.placements[device].where())
                else:
                    self._revive_failed[device] = time.monotonic()
            return started

    def _start_again(self, device: str, old: Placement, start_timeout_s: float) -> None:
        import ray

        options = replace(self._options[device], port=int(old.address.rpartition(":")[2]))
        previous = self._actors[device], self._names[device]
        ref = self._launch(device, options, node_id=old.node_id)
        try:
            self._placed(device, ray.get(ref, timeout=start_timeout_s))
        except (ray.exceptions.RayError, TimeoutError) as error:
            # a pending actor could still start later and take the port from the next try: kill it
            ray.kill(self._actors[device], no_restart=True)
            self._actors[device], self._names[device] = previous
            why = f"starting it again on {old.node_ip} failed: {_short(error)}"
            self._restart_failed[device] = (time.monotonic(), why)
            log.warning("stage %s: %s", device, why)
            return
        self._restart_failed.pop(device, None)

    def _launch(self, device: str, options: StageOptions, node_id: str | None = None):
        """Create the stage actor of `device` (on node `node_id` when given); the ObjectRef of its info."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor_class = ray.remote(StageActor)
        name = f"partition-{device}-{uuid.uuid4().hex[:8]}"
        self._actors[device] = actor_class.options(
            name=name,
            num_cpus=self._cpus,
            resources={RESOURCE_PREFIX + device: DEVICE_SHARE},
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False) if node_id else None,
            max_restarts=0,  # restarts are ours (restart_dead): at the same port, when a request needs it
            max_concurrency=4,  # wait_stopped blocks one thread; info and stop need others
        ).remote(options)
        self._names[device] = name
        return self._actors[device].info.remote()

    def _placed(self, device: str, info: dict) -> None:
        """Record where the actor of `device` serves, and watch for its end."""
        self.placements[device] = Placement(
            device, self._names[device], info["address"], info["node_id"], info["node_ip"], info["actor_id"],
            info["pid"],
        )  # fmt: skip
        self._done[device] = self._actors[device].wait_stopped.remote()
        log.info("stage %s: %s serving at %s", device, self.placements[device].where(), info["address"])

    def dead(self, wait_s: float = 0.0) -> dict[str, str]:
        """device -> why, for every actor Ray reports dead (waiting up to `wait_s` for a first one)."""
        import ray

        refs = list(self._done.values())
        if not refs:
            return {}
        ready, _ = ray.wait(refs, num_returns=1, timeout=wait_s)
        if ready:  # give the others a moment too: a dead node takes several stages with it
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5)
        dead = {}
        for device, ref in self._done.items():
            if ref in ready:
                try:
                    ray.get(ref)
                    dead[device] = "it stopped"
                except ray.exceptions.RayError as error:
                    dead[device] = _short(error)
        return dead

    def explain(self, error: PartitionError) -> PartitionError:
        """The same failure told in devices and nodes: which actor died, or where each address lives."""
        code = getattr(getattr(error, "code", None), "name", "")
        dead = self.dead(DEATH_NOTICE_S if code in _CONNECTION_CODES else 0.0)
        if dead:
            lines = [
                f"stage {device!r} ({self.placements[device].where()}) died: {why}"
                + (f" ({self._restart_failed[device][1]})" if device in self._restart_failed else "")
                for device, why in dead.items()
            ]
            return RayStageError("; ".join(lines) + f"; the request ended with: {error}")
        text = str(error)
        known = [p for p in self.placements.values() if p.address in text]
        if not known:
            return error
        where = "; ".join(f"{p.address} is stage {p.device!r}, {p.where()}" for p in known)
        return RayStageError(f"{text} [{where}]")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every actor gracefully, then kill it (stopped or not): nothing outlives the job."""
        import ray

        with self._lock:  # a restart under way ends first; none starts after
            self._stopped = True
        dead = self.dead()
        serving = [device for device in self.placements if device in self._actors and device not in dead]
        refs = [self._actors[device].stop.remote() for device in serving]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        for actor in self._actors.values():
            ray.kill(actor, no_restart=True)
        self._actors.clear()
        self._done.clear()
        self._reviving.clear()


@contextlib.contextmanager
def ray_stages(
    plan: Plan,
    address: str | None = "auto",
    transport=None,
    threads: int = 0,
    kv_budget_bytes: int = 1 << 30,
    start_timeout_s: float = START_TIMEOUT_S,
    spare: Iterable[str] = (),
) -> Iterator[RayStages]:
    """Connect to Ray, start one stage actor per remote stage of `plan`, stop them all on exit. `spare`:
    more devices to start an idle stage actor for, so that a re-plan can give them layers (one that no
    node advertises is left out, with a warning).

    A PartitionError raised inside the block comes out naming the stage's device and Ray node."""
    devices = [stage.device for stage in split_plan(plan).remote]
    with ray_devices(
        devices, plan.edge, plan.model.name, address, transport, threads, kv_budget_bytes, start_timeout_s,
        spare=[device for device in spare if device not in devices and device != plan.edge],
    ) as stages:  # fmt: skip
        yield stages


@contextlib.contextmanager
def ray_devices(
    devices: list[str],
    edge: str,
    model: str,
    address: str | None = "auto",
    transport=None,
    threads: int = 0,
    kv_budget_bytes: int = 1 << 30,
    start_timeout_s: float = START_TIMEOUT_S,
    spare: Iterable[str] = (),
) -> Iterator[RayStages]:
    """One stage actor (a worker) on the node of each of `devices`, and of each of `spare` that a node
    advertises; all stopped on exit."""
    from partition.transport.channels import TransportConfig

    transport = transport or TransportConfig()
    if transport.tls:
        raise ConfigError(
            "--ray serves plaintext with a fresh shared token per run; drop --tls-* "
            "(TLS certificates for stage actors are not supported yet)"
        )
    token = transport.token or secrets.token_urlsafe(32)
    transport = TransportConfig(token=token, keepalive_s=transport.keepalive_s)
    models_dir = None
    model_path = Path(model)
    if model_path.exists():  # a path: every node must have it at the same place
        models_dir = str(model_path.resolve().parent)
    connected_here = connect(address)
    if spare:
        advertised = device_nodes()
        for device in spare:
            if device not in advertised:
                log.warning("no node advertises %s%s: a re-plan cannot use it", RESOURCE_PREFIX, device)
        spare = [device for device in spare if device in advertised]
        devices = [*devices, *spare]
    options = {
        device: StageOptions(
            device, token, threads=threads, models_dir=models_dir, kv_budget_bytes=kv_budget_bytes
        )
        for device in devices
    }
    stages = RayStages(edge, transport, options, spare)
    try:
        if options:
            stages.start(cpus=max(1, threads), start_timeout_s=start_timeout_s)
        yield stages
    except PartitionError as error:
        raise stages.explain(error) from None
    finally:
        stages.stop()
        if connected_here:
            import ray

            ray.shutdown()


def connect(address: str | None) -> bool:
    """ray.init unless this process is already a driver; True when it connected here."""
    import ray

    if ray.is_initialized():
        return False
    named = address not in (None, "", "auto")  # else ray.init takes RAY_ADDRESS, or finds a local cluster
    given = address if named else os.environ.get("RAY_ADDRESS", "")
    given = "" if given == "auto" else given  # "": ray.init looks for a cluster itself
    if (
        given
        and not given.startswith(("ray://", "http://", "https://"))
        and not is_listening(given, CONNECT_TIMEOUT_S)
    ):
        # ray.init would retry an unreachable GCS for minutes
        source = f"--ray {given}" if named else f"RAY_ADDRESS={given}"
        raise RayStageError(
            f"nothing answers at {given} ({source}): give the address of the Ray head's GCS (`ray start "
            "--head` prints it, port 6379 by default), or leave --ray's address out to use RAY_ADDRESS"
        )
    verbose = logging.getLogger("partition").getEffectiveLevel() <= logging.INFO
    try:
        ray.init(
            address=address or "auto",
            logging_level=logging.INFO if verbose else logging.WARNING,
            log_to_driver=verbose,
        )
    except ConnectionError as error:
        if given:
            raise RayStageError(
                f"cannot connect to the Ray cluster at {given} ({error}); check the address and that the "
                "cluster runs"
            ) from None
        raise RayStageError(
            "no running Ray cluster found (RAY_ADDRESS is not set and this machine belongs to none): "
            "start one (`ray start --head`, or `ray up cluster/ray/cluster.yaml`) or give its address: "
            "--ray HOST:PORT"
        ) from None
    return True


def _raylet_answers(node: dict) -> bool:
    """Whether `node` (a ray.nodes() entry) is alive and its raylet accepts a connection now: Ray marks a
    node dead only after missing heartbeats for seconds, and an actor sent there meanwhile waits."""
    if not node.get("Alive"):
        return False
    host = node.get("NodeManagerAddress", "")
    host = f"[{host}]" if ":" in host else host
    return is_listening(f"{host}:{node.get('NodeManagerPort', 0)}")


def _check_edge(edge: str, nodes: dict[str, list[dict]]) -> None:
    import ray

    here = ray.get_runtime_context().get_node_id()
    edge_nodes = nodes.get(edge, [])
    if edge_nodes and here not in {n["NodeID"] for n in edge_nodes}:
        log.warning(
            "this coordinator runs on node %s, but %s%s is on %s: the edge's own segments run here. "
            "Submit with `ray job submit --entrypoint-resources '{\"%s%s\": %g}' ...` to run on the edge",
            here[:12], RESOURCE_PREFIX, edge, _node_list(edge_nodes), RESOURCE_PREFIX, edge, DEVICE_SHARE,
        )  # fmt: skip


def _missing_message(missing: list[str], nodes: dict[str, list[dict]]) -> str:
    import ray

    resources = sorted(
        key
        for key in ray.cluster_resources()
        if not key.startswith("node:") and key not in ("memory", "object_store_memory")
    )
    devices = ", ".join(f"{d} on {_node_list(ns)}" for d, ns in sorted(nodes.items())) or "none"
    wanted = ", ".join(f"{RESOURCE_PREFIX}{d}" for d in missing)
    return (
        f"no node of the Ray cluster advertises {wanted} (device(s) {', '.join(map(repr, missing))} of the "
        f"plan). Devices the cluster has: {devices}; its resources: {', '.join(resources) or 'none'}. "
        f"Start the node with `ray start --resources '{{\"{RESOURCE_PREFIX}{missing[0]}\": 1}}'` "
        "or set it under `resources` in cluster.yaml"
    )


def _node_list(nodes: list[dict], cpus: bool = False) -> str:
    return ", ".join(
        f"{n['NodeManagerAddress']} ({n['NodeID'][:12]}"
        + (f", {n['Resources'].get('CPU', 0):g} CPUs in all)" if cpus else ")")
        for n in nodes
    )


def _short(error: BaseException, lines: int = 6) -> str:
    """A Ray error's message without most of its traceback: the first line and the last few."""
    text = [line for line in str(error).strip().splitlines() if line.strip()]
    if len(text) <= lines:
        return " ".join(line.strip() for line in text)
    return " ".join(line.strip() for line in [text[0], "...", *text[-(lines - 1) :]])
