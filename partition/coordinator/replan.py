"""Re-plan around a worker that stays away, and with it again once it is back (serve): the same
workload on the devices there are, one epoch on each time.

A worker that died and is not back within one reconnect attempt would end every request: when serve
has the cluster's profiles (the cluster file `partition profile` writes), the coordinator instead plans
again without that device, and without any other server found not listening, keeping the plan's
workload, the units it pinned to the edge and the codecs it could use. The new plan (epoch + 1) is
deployed as `partition serve` deploys one: the workers left load their new segments and drop the old
epoch's sessions, a server the old plan left idle may get layers, the edge may take more itself. It is
written beside the plan file as `<plan>.epoch<N>.json`, and the request under way resumes on it
(coordinator/resume.py).

A worker away when serve starts is planned around the same way (`Failover.deploy`), and the plan
serve was given counts as the one served first.

A device planned around is looked for again, at most every `recheck_s` seconds, when a request starts
(the Answerer asks, and lets the requests under way end first): once its worker listens again, the
plan is made with it and, when that moves any layer, deployed as above (the returned worker loads its
segment). Once every device is back, the plan served first comes back (one epoch on). A take-back that
fails leaves the plan served as it was, and the next look waits twice as long (as it does when the
requests under way do not end in time).

    failover = Failover(cluster, addresses, transport, plan_path=Path("plan.json"))
    deployment = failover.deploy(plan, max_context, max_sessions)   # around a worker away at the start
    deployment = failover.redeploy(deployment, "server-b")   # DeployError, InfeasiblePlanError
    back = failover.returned()                               # {"server-b"} once it answers again
    if back:
        deployment = failover.take_back(deployment) or deployment     # None: the plan stays as it is
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc

from partition.coordinator.deploy import Deployment, WorkerAwayError, deploy
from partition.coordinator.loop import LoopThread
from partition.coordinator.workers import is_listening, worker_name_at
from partition.errors import ConfigError, InfeasiblePlanError, PartitionError
from partition.plan.cluster import Cluster
from partition.transport.channels import RECONNECT_WAIT_S, TransportConfig
from partition.types import Plan

log = logging.getLogger(__name__)

RECHECK_S = 10.0  # seconds between looks for devices planned around that listen again
MAX_RECHECK_S = 300.0  # after take-backs that failed, looks wait twice as long each time, up to this


def replan_without(
    plan: Plan, cluster: Cluster, lost: Iterable[str], max_context: int | None = None, max_sessions: int = 1
) -> Plan:
    """`plan`'s workload planned again on `cluster` less the servers `lost`, at the next epoch. With
    `max_context`, every device must also hold the KV slots serve has its workers allocate (`max_sessions`
    of `max_context` tokens): the plan's own workload may need far less, and a segment that grows on a
    small device would not load."""
    from partition.plan import make_plan, plan_codecs
    from partition.plan.validate import served_workload

    remaining, codecs = cluster.without(lost), plan_codecs(plan)
    memory = served_workload(max_context, max_sessions) if max_context is not None else None
    try:
        return make_plan(
            remaining,
            plan.workload,
            codecs,
            pin=plan.pin,
            epoch=plan.epoch + 1,
            min_gain=plan.min_gain,
            memory=memory,
        )
    except InfeasiblePlanError as error:
        if memory is None:
            raise
        raise InfeasiblePlanError(
            f"{error} (serving --max-context {max_context} x --max-sessions {max_sessions})"
        ) from None


def _described(plan: Plan) -> str:
    """ "plan ID epoch N, edge[0,1) server-a[1,32)", as the re-plan log lines name a plan."""
    stages = " ".join(f"{stage.device}{stage.segment}" for stage in plan.stages)
    return f"plan {plan.plan_id} epoch {plan.epoch}, {stages}"


def check_cluster_fits(plan: Plan, cluster: Cluster) -> None:
    """ConfigError unless `cluster` can re-plan `plan`: the same model, the same edge, every device of
    the plan in it."""
    if cluster.model.digest != plan.model.digest or cluster.model.n_blocks != plan.model.n_blocks:
        raise ConfigError(
            f"the cluster's profiles were measured on model {cluster.model.digest[:19]} with "
            f"{cluster.model.n_blocks} blocks, the plan is for {plan.model.digest[:19]} with "
            f"{plan.model.n_blocks} blocks; give serve the cluster file the plan was made from"
        )
    if cluster.edge.name != plan.edge:
        raise ConfigError(f"the cluster's edge is {cluster.edge.name}, the plan's is {plan.edge}")
    names = {device.name for device in cluster.devices}
    missing = sorted({stage.device for stage in plan.stages} - names)
    if missing:
        raise ConfigError(f"the plan uses device(s) {', '.join(missing)} that the cluster file does not list")


class Failover:
    def __init__(
        self,
        cluster: Cluster,
        addresses: Mapping[str, str],
        transport=None,
        plan_path: Path | None = None,
        recheck_s: float = RECHECK_S,
        revive: Callable[[set[str]], Mapping[str, str]] | None = None,
    ) -> None:
        """`cluster`: the devices and profiles the plan was made from; `addresses`: each server's worker
        (host:port); `plan_path`: the plan file, beside which every new plan is written; `recheck_s`:
        seconds between looks for a device planned around (0: at every request); `revive`: called at
        each look with the devices planned around, starts workers for those it can and returns their
        new addresses (serve --ray: a node that comes back is a new node, its stage a new actor)."""
        self.cluster = cluster
        self.addresses = dict(addresses)
        self.revive = revive
        self.transport = transport
        self.plan_path = plan_path
        self.recheck_s = recheck_s
        self.lost: set[str] = set()  # devices the plan served now was made without: gone, or not listening
        self.first: Plan | None = None  # the plan served before the first re-plan
        self.wait_s = recheck_s  # before the next look (longer after failed take-backs)
        self._looked = time.monotonic()
        self._strangers: dict[str, str] = {}  # device -> why what listens at its address is not it

    def deploy(self, plan: Plan, max_context: int, max_sessions: int) -> Deployment:
        """Deploy `plan` as serve starts. When one of its workers does not answer, plan without it and
        the other servers not listening now, deploy that (written beside the plan file), and look for
        them as for a worker lost later: once they listen, `plan` is served again, one epoch on."""
        # Both tries run on one loop, which the deployment served then owns: gRPC's asyncio poller hands
        # a completion of the first try's calls (the away worker's, as its channel closes) to the loop
        # they began on, and a loop closed by then refuses it ("Event loop is closed", logged).
        loop = LoopThread()
        try:
            deployment = self._deploy_or_plan_around(plan, max_context, max_sessions, loop)
        except BaseException:
            loop.close()
            raise
        deployment.owns_loop = True
        return deployment

    def _deploy_or_plan_around(
        self, plan: Plan, max_context: int, max_sessions: int, loop: LoopThread
    ) -> Deployment:
        try:
            return deploy(plan, self.addresses, self.transport, max_context, max_sessions, loop=loop)
        except WorkerAwayError as error:
            log.warning("%s", error)
            away, why = {error.device}, error
        left_out = self._left_out(away)
        try:
            new = replan_without(plan, self.cluster, left_out, max_context, max_sessions)
        except PartitionError as failed:  # nothing serves without it: say which worker to start
            raise WorkerAwayError(f"{why}; planning without it failed: {failed}", why.device) from None
        log.warning("planned without %s: %s", ", ".join(sorted(left_out)), _described(new))
        deployment = self._roll_out(new, left_out, max_context, max_sessions, loop=loop)
        self.first = plan
        self.wait_s, self._looked = self.recheck_s, time.monotonic()
        return deployment

    def redeploy(self, deployment: Deployment, lost_device: str) -> Deployment:
        """Plan without `lost_device` and the servers not listening now, deploy, write the plan. The
        device is given up on once the new plan is deployed (a failed try changes nothing)."""
        first = self.first or deployment.plan
        new = self._deploy_without(deployment, {lost_device})
        self.first = first
        self.wait_s, self._looked = self.recheck_s, time.monotonic()  # the first look waits recheck_s
        return new

    def due(self) -> bool:
        """Whether a device is planned around and `wait_s` passed since the last look (or the re-plan)."""
        return bool(self.lost) and time.monotonic() - self._looked >= self.wait_s

    def returned(self) -> set[str]:
        """The devices planned around whose own workers answer again; empty until `due`."""
        if not self.due():
            return set()
        if self.revive is not None:
            try:
                self.addresses.update(self.revive(set(self.lost)))
            except Exception as error:  # the cluster did not answer: the next look tries again
                log.warning("looking for %s again failed: %s", ", ".join(sorted(self.lost)), error)
        self._looked = time.monotonic()
        return self._listening(self.lost)

    def take_back(self, deployment: Deployment) -> Deployment | None:
        """Plan with every server listening now (those `returned` found among them); the new deployment,
        or None when the plan would not move a layer (they are then used by the next re-plan). Raises
        what `redeploy` raises, and then waits twice as long before the next look."""
        try:
            new = self._deploy_without(deployment, set(), unchanged=deployment.plan)
        except BaseException:
            self.postpone()
            raise
        self.wait_s = self.recheck_s
        return new

    def postpone(self) -> None:
        """A take-back did not happen (it failed, or requests under way did not end): the next look
        waits twice as long from now, up to MAX_RECHECK_S."""
        self.wait_s = min(max(2 * self.wait_s, 1.0), MAX_RECHECK_S)
        self._looked = time.monotonic()

    def _deploy_without(
        self, deployment: Deployment, lost: set[str], unchanged: Plan | None = None
    ) -> Deployment | None:
        """Plan without `lost` and the servers not listening now (one given up on earlier that listens
        again is planned with); None when the stages are those of `unchanged`, else the plan deployed
        and written. With every device of the plan served first there, that plan, one epoch on."""
        left_out = self._left_out(lost)
        back = self.lost - left_out
        first_again = self.first is not None and not left_out & {s.device for s in self.first.stages}
        if first_again:
            plan = replace(self.first, epoch=deployment.plan.epoch + 1)
        else:
            plan = replan_without(
                deployment.plan, self.cluster, left_out, deployment.max_context, deployment.max_sessions
            )
        if unchanged is not None and plan.stages == unchanged.stages:
            log.info("%s back; the plan stays as it is", ", ".join(sorted(back)))
            self.lost = left_out
            return None
        change = []
        if left_out:
            change.append(f"without {', '.join(sorted(left_out))}")
        if back:
            change.append(f"with {', '.join(sorted(back))} back")
        first_note = " (the plan served first)" if first_again else ""
        log.warning("re-planned %s%s: %s", ", ".join(change), first_note, _described(plan))
        new = self._roll_out(
            plan, left_out, deployment.max_context, deployment.max_sessions, loop=deployment.loop
        )
        new.owns_loop, deployment.owns_loop = deployment.owns_loop, False  # the loop goes on with `new`
        return new

    def _left_out(self, lost: set[str]) -> set[str]:
        """`lost` and the other servers whose workers do not listen now: the devices to plan without."""
        servers = {device.name for device in self.cluster.servers} - lost
        return lost | (servers - self._listening(servers))

    def _roll_out(
        self, plan: Plan, left_out: set[str], max_context: int, max_sessions: int, loop=None
    ) -> Deployment:
        """Deploy `plan` (made without `left_out`) and write it beside the plan file; from then on
        `left_out` are the devices looked for again. A deploy that fails changes nothing here."""
        deployment = deploy(
            plan,
            self.addresses,
            self.transport,
            max_context,
            max_sessions,
            loop=loop,
            connect_wait_s=RECONNECT_WAIT_S,  # a worker back after a while: its channel retries
        )
        self._write(plan)
        self.lost = left_out
        return deployment

    def _listening(self, devices: set[str]) -> set[str]:
        """Those of `devices` whose worker listens now and answers under the device's name (probed at
        once, not in turn: an unreachable host takes is_listening's whole timeout). Another worker at a
        device's address (its port given to another) is not that device: a deploy there is refused, and
        each look would drain and reload the plan served for nothing."""
        named = sorted(name for name in devices if name in self.addresses)
        if not named:
            return set()
        with ThreadPoolExecutor(max_workers=len(named)) as pool:
            up = list(pool.map(self._answers_as_itself, named))
        return {name for name, answers in zip(named, up, strict=True) if answers}

    def _answers_as_itself(self, device: str) -> bool:
        address = self.addresses[device]
        if not is_listening(address):
            self._strangers.pop(device, None)
            return False
        try:
            name = worker_name_at(address, self.transport or TransportConfig())
        except grpc.RpcError as error:
            why = f"{address} takes connections but its Probe failed: {error.code().name}: {error.details()}"
        else:
            if name == device:
                self._strangers.pop(device, None)
                return True
            why = (
                f"worker {name!r} answers at {address}; {device} is planned with again once its own "
                f"worker does (partition worker --listen {address} --name {device})"
            )
        if self._strangers.get(device) != why:  # once per answer, not at every look
            log.warning("%s is not back: %s", device, why)
            self._strangers[device] = why
        return False

    def _write(self, plan: Plan) -> None:
        """The plan beside the plan file (plan.json -> plan.epoch2.json); serving goes on without it."""
        if self.plan_path is None:
            return
        from partition.artifacts import save_plan

        stem = re.sub(r"\.epoch\d+$", "", self.plan_path.stem)  # plan.epoch2.json -> plan.epoch3.json
        path = self.plan_path.with_name(f"{stem}.epoch{plan.epoch}.json")
        try:
            save_plan(plan, path)
        except ConfigError as error:  # write_atomically's word for an OSError (a folder there, read-only)
            log.warning(
                "%s; serving the new plan all the same (to have it written, remove what is at %s or serve "
                "a --plan in a folder this user can write)",
                error,
                path,
            )
            return
        log.warning("the new plan is in %s", path)
