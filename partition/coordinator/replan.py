"""Re-plan around a worker that stays away (serve): the same workload on the devices left, one epoch on.

A worker that died and is not back within one reconnect attempt would end every request: when serve
has the cluster's profiles (the cluster file `partition profile` writes), the coordinator instead plans
again without that device, and without any other server found not listening, keeping the plan's
workload, the units it pinned to the edge and the codecs it could use. The new plan (epoch + 1) is
deployed as `partition serve` deploys one: the workers left load their new segments and drop the old
epoch's sessions, a server the old plan left idle may get layers, the edge may take more itself. It is
written beside the plan file as `<plan>.epoch<N>.json`, and the request under way resumes on it
(coordinator/resume.py). A lost device is not taken back when it returns: plan and serve again for that.

    failover = Failover(cluster, addresses, transport, plan_path=Path("plan.json"))
    deployment = failover.redeploy(deployment, "server-b")   # DeployError, InfeasiblePlanError
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from partition.coordinator.deploy import Deployment, deploy
from partition.coordinator.workers import is_listening
from partition.errors import ConfigError
from partition.plan.cluster import Cluster
from partition.types import Plan

log = logging.getLogger(__name__)


def replan_without(plan: Plan, cluster: Cluster, lost: Iterable[str]) -> Plan:
    """`plan`'s workload planned again on `cluster` less the servers `lost`, at the next epoch."""
    from partition.plan import DEFAULT_CODECS, make_plan, select_codecs

    codecs = select_codecs(DEFAULT_CODECS, list(plan.codecs) if plan.codecs else None)
    remaining = cluster.without(lost)
    return make_plan(
        remaining, plan.workload, codecs, pin=plan.pin, epoch=plan.epoch + 1, min_gain=plan.min_gain
    )


def check_cluster_fits(plan: Plan, cluster: Cluster) -> None:
    """ConfigError unless `cluster` can re-plan `plan`: the same model, the same edge, every device of
    the plan in it."""
    if cluster.model.digest != plan.model.digest or cluster.model.n_blocks != plan.model.n_blocks:
        raise ConfigError(
            f"the cluster's profiles were measured on model {cluster.model.digest[:19]}, the plan is for "
            f"{plan.model.digest[:19]}; give serve the cluster file the plan was made from"
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
    ) -> None:
        """`cluster`: the devices and profiles the plan was made from; `addresses`: each server's worker
        (host:port); `plan_path`: the plan file, beside which every new plan is written."""
        self.cluster = cluster
        self.addresses = addresses
        self.transport = transport
        self.plan_path = plan_path
        self.lost: set[str] = set()  # devices given up on: no later plan uses them

    def redeploy(self, deployment: Deployment, lost_device: str) -> Deployment:
        """Plan without `lost_device` (and the servers not listening now), deploy, write the plan. The
        device is given up on once the new plan is deployed (a failed try changes nothing)."""
        lost = self.lost | {lost_device}
        away = {
            device.name
            for device in self.cluster.servers
            if device.name not in lost
            and not (device.name in self.addresses and is_listening(self.addresses[device.name]))
        }
        plan = replan_without(deployment.plan, self.cluster, lost | away)
        log.warning(
            "re-planned without %s: plan %s epoch %d, %s",
            ", ".join(sorted(lost | away)), plan.plan_id, plan.epoch,
            " ".join(f"{s.device}{s.segment}" for s in plan.stages),
        )  # fmt: skip
        new = deploy(
            plan,
            self.addresses,
            self.transport,
            deployment.max_context,
            deployment.max_sessions,
            loop=deployment.loop,
        )
        new.owns_loop, deployment.owns_loop = deployment.owns_loop, False  # the loop goes on with `new`
        self.lost = lost
        self._write(plan)
        return new

    def _write(self, plan: Plan) -> None:
        """The plan beside the plan file (plan.json -> plan.epoch2.json); serving goes on without it."""
        if self.plan_path is None:
            return
        from partition.artifacts import save_plan

        stem = re.sub(r"\.epoch\d+$", "", self.plan_path.stem)  # plan.epoch2.json -> plan.epoch3.json
        path = self.plan_path.with_name(f"{stem}.epoch{plan.epoch}.json")
        try:
            save_plan(plan, path)
        except OSError as error:
            log.warning("cannot write the new plan to %s (%s); serving it all the same", path, error)
            return
        log.warning("the new plan is in %s", path)
