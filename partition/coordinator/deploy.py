"""Deploy a plan: load the edge's segments here, LoadSegment on every worker, check every ack, and
estimate each worker's clock offset (deploy, before serve).

A deployment is only usable when every worker acknowledged the same plan id, epoch, model digest and
the segment the plan gave it; anything else stops here with a message naming the worker and the mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from partition.coordinator.clock import ClockEstimate, estimate_offset
from partition.coordinator.loop import STOPPED, LoopThread
from partition.coordinator.topology import Topology, split_plan
from partition.errors import PartitionError, StoppedError
from partition.types import Plan, Stage

log = logging.getLogger(__name__)

PROBE_ROUNDS = 16  # round trips per worker for the clock-offset estimate


class DeployError(PartitionError):
    """A worker is missing, refused its segment, or acknowledged something other than the plan."""


class WorkerAwayError(DeployError):
    """A worker of the plan did not answer at all: nothing listens at its address, or it is unreachable."""

    def __init__(self, message: str, device: str) -> None:
        super().__init__(message)
        self.device = device


@dataclass
class Deployment:
    plan: Plan
    topology: Topology
    source: object  # ModelSource: the edge's copy of the model
    front_model: object | None  # SegmentModel run in this process before the chain
    tail_model: object | None  # SegmentModel run in this process after the chain
    chain: object | None  # transport.client.Chain over the remote stages
    addresses: tuple[str, ...]  # remote stages' addresses, chain order
    clocks: tuple[ClockEstimate, ...]  # per remote stage
    acks: tuple = ()  # LoadSegmentReply per remote stage
    max_context: int = 2048  # tokens per session
    max_sessions: int = 4  # sessions at once: the KV slots each worker holds
    loop: LoopThread = field(default_factory=LoopThread)
    # whether close() stops the loop: a re-plan's deployment runs on its predecessor's loop (gRPC's
    # asyncio poller serves one loop; a closed one beside it gets callbacks it cannot take) and takes
    # the loop over from it
    owns_loop: bool = True
    closed: bool = False  # set first thing by close(): what is under way then must not go on

    @property
    def devices(self) -> dict[str, str]:
        """Each remote stage's address -> its device, as the plan names it."""
        return {
            address: stage.device for address, stage in zip(self.addresses, self.topology.remote, strict=True)
        }

    @property
    def returns_remote_logits(self) -> bool:
        """Whether a worker holds the head (the chain returns logits, not hidden states)."""
        return self.chain is not None and self.tail_model is None

    def check_open(self) -> None:
        """StoppedError once close() began: a step on a closed deployment would run without its chain or
        segments (PipelineSession checks every step), and a request still under way must end, not go
        on through half of it (whatever else the stop cuts short, Answerer.answer says so)."""
        if self.closed:
            raise StoppedError(STOPPED)

    def close(self) -> None:
        """Close the channels and let the edge's segments go (a replaced deployment holds memory)."""
        self.closed = True
        if self.chain is not None:
            self.loop.run(self.chain.close(), timeout_s=10)
            self.chain = None
        if self.owns_loop:
            self.loop.close()
        self.front_model = self.tail_model = None


def plan_model(plan: Plan):
    """The plan's model on this machine (a ModelSource). Its name comes from the plan file, and an
    error says so: "unknown model" alone would send the user to the command line's --model."""
    from partition.errors import ModelNotFoundError
    from partition.model import resolve_model

    try:
        return resolve_model(plan.model.name)
    except ModelNotFoundError as error:
        raise ModelNotFoundError(
            f"the plan's model {plan.model.name!r} is not on this machine ({error}); install it, or make "
            "the plan again with `partition plan --model` naming a model this machine has"
        ) from None


def deploy(
    plan: Plan,
    addresses: Mapping[str, str],
    transport=None,
    max_context: int = 2048,
    max_sessions: int = 4,
    loop: LoopThread | None = None,
    connect_wait_s: float = 0.0,
) -> Deployment:
    """Load `plan`; `addresses` maps each remote device name to its worker's host:port. With `loop`,
    the deployment's channels run on that loop, which it does not stop when it closes.
    `connect_wait_s`: see load_workers. WorkerAwayError names a worker that does not answer at all."""
    import grpc

    from partition.model import load_segment
    from partition.model.segment import share_tied_matrix
    from partition.transport.channels import TransportConfig
    from partition.transport.client import Chain, StageCallError

    topology = split_plan(plan)
    missing = [s.device for s in topology.remote if s.device not in addresses]
    if missing:
        raise DeployError(
            f'no address for device(s) {", ".join(missing)}: give each an `address = "host:port"` in the '
            "cluster file, or use --spawn-local to start them on this machine"
        )
    source = plan_model(plan)
    if max_context > source.spec.max_context:
        log.warning(
            "max context %d is more than %r holds: sessions get at most %d tokens",
            max_context,
            plan.model.name,
            source.spec.max_context,
        )
        max_context = source.spec.max_context
    if plan.model.digest and source.digest != plan.model.digest:
        raise DeployError(
            f"this machine's copy of {plan.model.name!r} has digest {source.digest}, but the plan was made "
            f"for {plan.model.digest}; re-run `partition plan` against this model"
        )
    if plan.model.n_blocks != source.spec.n_blocks:
        raise DeployError(
            f"the plan splits {plan.model.n_blocks} blocks, but {plan.model.name!r} has {source.spec.n_blocks}; "
            "re-run `partition plan` for this model"
        )

    def load_here() -> None:
        front = load_segment(source, topology.front.segment) if topology.front else None
        tail = load_segment(source, topology.tail.segment) if topology.tail else None
        share_tied_matrix(front, tail)  # as the planner counted: the edge holds a tied matrix once
        deployment.front_model, deployment.tail_model = front, tail

    deployment = Deployment(
        plan, topology, source, None, None, None, (), (), max_context=max_context, max_sessions=max_sessions,
        loop=loop or LoopThread(), owns_loop=loop is None,
    )  # fmt: skip
    remote_addresses = tuple(addresses[s.device] for s in topology.remote)
    try:
        if not remote_addresses:
            load_here()
            return deployment
        # The edge loads its segments while the workers load theirs: a deploy takes about the longer of
        # the two, not their sum (a process's first deploy of three workers and the edge's 8 blocks, all
        # on one two-core host: 5.1 s one after the other, 4.1 s together; on machines of their own the
        # gain is the edge's whole load). A worker's refusal is raised once the edge's load has ended.
        with ThreadPoolExecutor(1, thread_name_prefix="edge-load") as edge:
            loaded_here = edge.submit(load_here)
            chain = deployment.loop.run(
                _make_chain(Chain, list(remote_addresses), transport or TransportConfig())
            )
            deployment.chain, deployment.addresses = chain, remote_addresses
            load_workers(deployment, connect_wait_s)
            loaded_here.result()
    except StageCallError as error:
        deployment.close()
        device = deployment.devices.get(error.address, "?")
        if error.code == grpc.StatusCode.UNAVAILABLE:
            raise WorkerAwayError(
                f"worker for device {device!r} at {error.address} does not answer ({error.details}); start "
                f"it with `partition worker --listen {error.address} --name {device}`, or correct its "
                "address in the cluster file",
                device,
            ) from None
        raise DeployError(
            f"worker for device {device!r} at {error.address} refused: {error.details}"
        ) from None
    except BaseException:
        deployment.close()
        raise
    return deployment


def load_workers(deployment: Deployment, connect_wait_s: float = 0.0) -> None:
    """LoadSegment on every worker, each ack checked, and each worker's clock offset measured.

    `deploy` calls it once; a running deployment calls it again when a worker was restarted (it came
    back with nothing loaded): that one loads its segment of the same plan and epoch, and the others,
    which still hold theirs, answer at once and keep their sessions. With `connect_wait_s`, first wait
    that long at most for every channel to connect: a worker that was away is tried again only at the
    reconnect backoff (channels to one address share it). Raises DeployError for a wrong ack,
    StageCallError for a worker that refuses or is still away.
    """
    plan, topology, chain = deployment.plan, deployment.topology, deployment.chain
    if connect_wait_s:  # a worker that hangs would hold LoadSegment for its whole timeout
        away = deployment.loop.run(chain.away(connect_wait_s))
        if away:
            import grpc

            from partition.transport.client import StageCallError

            raise StageCallError(
                grpc.StatusCode.UNAVAILABLE,
                f"no answer within {connect_wait_s:g} s: its worker is down, or hangs",
                away[0],
                deployment.devices.get(away[0], ""),
            )
    acks = deployment.loop.run(
        chain.load(
            plan.plan_id,
            plan.epoch,
            plan.model.name,
            [s.segment for s in topology.remote],
            [s.codec_out for s in topology.remote],
            model_digest=plan.model.digest,
            max_context=deployment.max_context,
            max_sessions=deployment.max_sessions,
            workers=[s.device for s in topology.remote],
        )
    )
    for stage, address, ack in zip(topology.remote, deployment.addresses, acks, strict=True):
        _check_ack(plan, stage, address, ack)
    clocks = tuple(
        _clock_of(deployment, client, f"{stage.device} at {address}")
        for client, stage, address in zip(chain.stages, topology.remote, deployment.addresses, strict=True)
    )
    deployment.acks, deployment.clocks = tuple(acks), clocks
    for stage, ack, clock in zip(topology.remote, deployment.acks, deployment.clocks, strict=True):
        # a worker that held some of its units before (a re-plan moved its range) says how many
        kept = f" ({ack.units_kept} of {len(stage.segment)} units kept)" if ack.units_kept else ""
        log.info(
            "stage %s %s loaded %s in %.2f s%s, %.1f MB; clock offset %+.3f ms (+/- %.3f ms)",
            stage.device,
            stage.segment,
            ack.model_name,
            ack.load_s,
            kept,
            ack.weight_bytes / 1e6,
            clock.offset_ns / 1e6,
            clock.error_bound_ns / 1e6,
        )


async def _make_chain(chain_class, addresses, config):
    # grpc.aio channels belong to the loop they are created on: create them on the deployment's loop
    return chain_class(addresses, config)


def _clock_of(deployment, client, who: str) -> ClockEstimate:
    """The clock of the worker behind `client` against ours, from PROBE_ROUNDS probes."""
    samples = deployment.loop.run(client.probe(PROBE_ROUNDS))
    try:
        return estimate_offset([(s.t0, s.t1, s.t2, s.t3) for s in samples])
    except ValueError as error:
        raise DeployError(f"{who}: {error}; deploy again") from None


def _check_ack(plan: Plan, stage: Stage, address: str, ack) -> None:
    who = f"worker {ack.worker!r} at {address} (device {stage.device!r})"
    if ack.worker != stage.device:
        raise DeployError(
            f"{address} answers as worker {ack.worker!r} but the plan puts device {stage.device!r} there; "
            "check the addresses in the cluster file"
        )
    if (ack.plan_id, ack.epoch) != (plan.plan_id, plan.epoch):
        raise DeployError(
            f"{who} acknowledged plan {ack.plan_id} epoch {ack.epoch}, expected {plan.plan_id} epoch {plan.epoch}"
        )
    if plan.model.digest and ack.model_digest != plan.model.digest:
        raise DeployError(
            f"{who} has model digest {ack.model_digest}, the plan needs {plan.model.digest}: "
            "give that worker the same model file"
        )
    if (ack.start, ack.end) != (stage.segment.start, stage.segment.end):
        raise DeployError(f"{who} loaded [{ack.start},{ack.end}), the plan gave it {stage.segment}")
