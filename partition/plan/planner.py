"""From a cluster and a workload to a Plan (plan): solve, predict, compare with baselines.

The single entry point `make_plan` is what `partition plan` and the coordinator's re-planning call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math

from partition.errors import ConfigError, InfeasiblePlanError
from partition.plan.baselines import baselines
from partition.plan.cluster import Cluster
from partition.plan.codecs import DEFAULT_CODECS, CodecSpec
from partition.plan.costmodel import evaluate, shared_weight_bytes, unit_memory_bytes
from partition.plan.instance import build_instance
from partition.plan.simplify import Chain, leave_out_needless, servers_of
from partition.plan.solver import FRONT_LIMIT, Solution, solve
from partition.plan.validate import chain_problem, gb
from partition.types import DEFAULT_PINNING, MAX_SESSIONS, Pinning, Plan, Segment, Stage, Workload

log = logging.getLogger(__name__)


def make_plan(
    cluster: Cluster,
    workload: Workload,
    codecs: tuple[CodecSpec, ...] = DEFAULT_CODECS,
    pin: Pinning = DEFAULT_PINNING,
    epoch: int = 1,
    min_gain: float = 0.0,
    memory: Workload | None = None,
) -> Plan:
    """The optimal plan for `workload` on `cluster`; InfeasiblePlanError says why when none fits.

    By default the edge holds embed and the planner places the head where it is cheapest. With
    `min_gain` > 0, servers that save less than that fraction of the objective are left out
    (partition.plan.simplify): the plan is then within `min_gain` of the optimum, on fewer devices.
    `memory`: the workload whose KV cache every device must hold beside its weights, when it is not
    `workload` (a re-plan under serve: the KV slots the workers allocate, validate.served_workload).
    Baselines are checked against `workload`.
    """
    if not codecs:
        raise ConfigError("the planner needs at least one codec")
    if cluster.model.n_blocks < 1:
        raise ConfigError("the model has no transformer blocks; there is nothing to split")
    if not 0 <= min_gain < 1:
        raise ConfigError(
            f"--min-gain {min_gain:g}: give a fraction of the objective from 0 to below 1 (0.01 leaves out "
            "servers that save under 1%; 0 keeps the exact optimum)"
        )
    if workload.sessions > MAX_SESSIONS:
        raise ConfigError(
            f"--sessions {workload.sessions}: every stage holds each session, and a worker holds at most "
            f"{MAX_SESSIONS} at once; plan with --sessions {MAX_SESSIONS} or fewer"
        )

    held = memory or workload
    past = extrapolated(cluster, workload)
    if past:
        log.warning("%s", past)

    def best_chain(c: Cluster) -> Chain | None:
        instance = build_instance(c, workload, codecs, pin, memory=held)
        solution = solve(instance)
        if solution is not None and not solution.exact:
            log.warning(
                "the search over %d kinds of device passed its limit of %d partial chains per cut: the plan "
                "is the best found, not proven optimal (devices whose profiles were alike would count as one kind)",
                len(instance.kinds), FRONT_LIMIT,
            )  # fmt: skip
        return None if solution is None else (solution.objective, to_stages(instance.kinds, solution))

    optimum = best_chain(cluster)
    if optimum is None:
        raise InfeasiblePlanError(diagnose(cluster, held, pin))
    chosen = leave_out_needless(cluster, optimum, best_chain, min_gain)
    objective, stages = chosen
    left_out = servers_of(optimum, cluster.edge.name) - servers_of(chosen, cluster.edge.name)
    problem = chain_problem(cluster, stages, held, pin)
    assert not problem, f"solver returned an invalid chain: {problem}"
    predicted = evaluate(cluster, stages, workload, codecs)
    assert math.isclose(predicted.objective_s, objective, rel_tol=1e-6, abs_tol=1e-12), (
        predicted.objective_s,
        objective,
    )
    used = {stage.device for stage in stages} | {cluster.edge.name}
    return Plan(
        plan_id=plan_id(cluster, stages, workload),
        epoch=epoch,
        model=cluster.model,
        edge=cluster.edge.name,
        stages=stages,
        workload=workload,
        predicted=predicted,
        baselines=baselines(cluster, workload, codecs, pin),
        unused=tuple(d.name for d in cluster.devices if d.name not in used),
        edge_threads=cluster.edge.profile.device.threads,
        min_gain=min_gain,
        left_out=tuple(sorted(left_out)),
        optimum_s=optimum[0] if chosen is not optimum else 0.0,
        pin=pin,
        codecs=tuple(codec.name for codec in codecs),
        codec_figures=codecs,
    )


def extrapolated(cluster: Cluster, workload: Workload) -> str:
    """What the plan's figures take from past the lengths the devices' profiles were timed at ("" when
    nothing), and how to profile for it."""
    prompt, context = workload.prompt_tokens, workload.prompt_tokens + workload.new_tokens - 1
    past, short = [], {}
    for device in cluster.devices:
        profile = device.profile
        beyond = []
        if 0 < profile.prefill_tokens_max < prompt:
            beyond.append(f"prompts of at most {profile.prefill_tokens_max} tokens")
            short["prompt"] = f"--prefill-lengths reaching {prompt}"
        if 0 < profile.context_tokens_max < context:
            beyond.append(f"contexts of at most {profile.context_tokens_max}")
            short["context"] = f"--context-lengths reaching {context}"
        if beyond:
            past.append(f"{device.name} ({' and '.join(beyond)})")
    if not past:
        return ""
    workload_said = " and ".join(
        said for key, said in (("prompt", f"{prompt}-token prompt"), ("context", f"{context}-token context"))
        if key in short
    )  # fmt: skip
    return (
        f"the profiles of {', '.join(past)} were timed short of this workload's {workload_said}: its times "
        f"are extrapolated from their fits. For figures measured there, profile again with "
        f"{' and '.join(short.values())}"
    )


def to_stages(kinds, solution: Solution) -> tuple[Stage, ...]:
    """Name a device for each stage: the members of a kind in file order, as the chain first uses them."""
    next_member = [0] * len(kinds)
    stages = []
    for (kind, start, end), codec in zip(solution.stages, solution.codecs, strict=True):
        members = kinds[kind].devices
        device = members[0] if kind == 0 else members[next_member[kind]]
        if kind:
            next_member[kind] += 1
        stages.append(Stage(device, Segment(start, end), codec))
    return tuple(stages)


def plan_id(cluster: Cluster, stages: tuple[Stage, ...], workload: Workload) -> str:
    """A content hash: the same model, split, codecs and workload give the same id."""
    content = {
        "model": cluster.model.digest,
        "stages": [[s.device, s.segment.start, s.segment.end, s.codec_out] for s in stages],
        "workload": [workload.prompt_tokens, workload.new_tokens, workload.sessions, workload.objective],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def diagnose(cluster: Cluster, w: Workload, pin: Pinning) -> str:
    """Why no chain fits: the first constraint found broken, with the shortfall."""
    n = cluster.model.n_units
    edge = cluster.edge
    context = f"for {w.kv_tokens} tokens of context x {w.sessions} session(s)"

    def need(device, *segments: tuple[int, int]) -> int:
        units = sum(
            unit_memory_bytes(device.profile.unit_cost(u), w) for s, e in segments for u in range(s, e)
        )
        return units - shared_weight_bytes(device.profile, *segments)

    pinned = [(name, unit) for name, unit, on in (("embed", 0, pin.embed), ("head", n - 1, pin.head)) if on]
    if pinned:
        ends = need(edge, *((unit, unit + 1) for _, unit in pinned))
        if ends > edge.memory_bytes:
            names = " and ".join(name for name, _ in pinned)
            return (
                f"the edge {edge.name} must hold {names}, which {'need' if len(pinned) > 1 else 'needs'} "
                f"{gb(ends)}, but it offers "
                f"{gb(edge.memory_bytes)}; raise its memory_gb or plan with --no-pin"
                + (" and without --head-on-edge" if pin.head else "")
            )
    reachable = cluster.round_trip_servers()
    devices = [edge, *reachable]
    largest_block = max(range(1, n - 1), key=lambda u: need(edge, (u, u + 1)))
    block_fits = [d for d in devices if need(d, (largest_block, largest_block + 1)) <= d.memory_bytes]
    if not block_fits:
        best = max(devices, key=lambda d: d.memory_bytes)
        return (
            f"one block needs {gb(need(best, (largest_block, largest_block + 1)))} {context}, "
            f"but the largest device ({best.name}) offers {gb(best.memory_bytes)}; plan fewer --sessions or "
            "a shorter --prompt-tokens/--new-tokens, or add a device with more memory"
        )
    if not reachable:
        return (
            f"the model needs {gb(need(edge, (0, n)))} {context} but the edge {edge.name} offers "
            f"{gb(edge.memory_bytes)}, and no server is linked to it both ways; add [[link]] entries"
        )
    needed = min(need(d, (0, n)) for d in devices)
    offered = sum(d.memory_bytes for d in devices)
    weights = min(
        sum(d.profile.unit_cost(u).weight_bytes for u in range(n)) - shared_weight_bytes(d.profile, (0, n))
        for d in devices
    )
    if needed > offered:
        return (
            f"the model needs {gb(needed)} ({gb(weights)} of weights + KV cache {context}), "
            f"devices reachable from the edge offer {gb(offered)}; add a server (and its [[link]]) or "
            "memory_gb where a device has more, or plan fewer --sessions or tokens"
        )
    return (
        f"no chain of linked devices fits: the model needs {gb(needed)} {context}, the devices offer "
        f"{gb(offered)} in total, but segments must be contiguous and each device holds one; "
        "add memory, links between servers, or fewer sessions/tokens"
    )
