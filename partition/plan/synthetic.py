"""Profiles and clusters built from a few numbers (plan): scenarios for benchmarks and tests.

Real profiles come from `partition profile`; these stand in where a scenario needs devices this
machine does not have (a GPU server, a phone). The defaults are what `partition profile` measured for
SmolLM2-135M in fp32 on this CPU with one thread; `speed` scales them.
"""

from __future__ import annotations

from partition.plan.cluster import GB, MBPS, Cluster, Device
from partition.types import (
    TOP_K_LOGITS_BYTES,
    DeviceIdentity,
    DeviceProfile,
    Fit,
    LayerCost,
    LinkProfile,
    ModelRef,
    Plan,
    Segment,
    Stage,
    Workload,
)

# SmolLM2-135M: hidden 576, 3 KV heads of 64, 30 blocks, 49152-token vocabulary (tied head), fp32.
SMOLLM2 = ModelRef("smollm2-135m", "synthetic-smollm2", 30)
HIDDEN = 576
BLOCK_WEIGHT_BYTES = 4 * 3_540_000
EMBED_WEIGHT_BYTES = 4 * 49152 * 576
KV_BYTES_PER_TOKEN = 2 * 3 * 64 * 4


def synthetic_profile(
    name: str,
    speed: float = 1.0,
    model: ModelRef = SMOLLM2,
    hidden: int = HIDDEN,
    block_weight_bytes: int = BLOCK_WEIGHT_BYTES,
    embed_weight_bytes: int = EMBED_WEIGHT_BYTES,
    memory_gb: float = 8.0,
) -> DeviceProfile:
    """A profile whose times are this CPU's divided by `speed` (2.0: twice as fast)."""
    act = 4 * hidden

    def cost(kind: str, prefill: Fit, decode: Fit, weights: int, kv: int, out: int) -> LayerCost:
        scaled = [Fit(f.c0 / speed, f.c1 / speed, f.c2 / speed) for f in (prefill, decode)]
        return LayerCost(kind, scaled[0], scaled[1], weights, kv, out)

    return DeviceProfile(
        device=DeviceIdentity(name, "synthetic", 1, None, int(memory_gb * GB)),
        model=model,
        dtype="float32",
        embed=cost("embed", Fit(3e-5, 1e-7), Fit(3e-5, 0.0), embed_weight_bytes, 0, act),
        block=cost(
            "block",
            Fit(2.0e-3, 1.2e-4, 2e-9),
            Fit(1.1e-3, 6.5e-7),
            block_weight_bytes,
            KV_BYTES_PER_TOKEN,
            act,
        ),
        # the head runs on the last position only, in prefill as in decode (the coordinator samples it)
        head=cost("head", Fit(14e-3, 2e-5), Fit(13.5e-3, 0.0), embed_weight_bytes, 0, TOP_K_LOGITS_BYTES),
        top_k_encode_s=0.3e-3 / speed,  # a top-64 of SmolLM2's 49152 logits, cold cache, here
        top_k_decode_s=0.2e-3 / speed,
    )


def link_pair(a: str, b: str, bandwidth_mbps: float, latency_ms: float) -> tuple[LinkProfile, LinkProfile]:
    """Both directions of a symmetric link."""
    bw, lat = bandwidth_mbps * MBPS, latency_ms / 1e3
    return LinkProfile(a, b, lat, bw), LinkProfile(b, a, lat, bw)


def star_cluster(
    edge: DeviceProfile,
    edge_memory_gb: float,
    servers: list[tuple[str, DeviceProfile, float]],
    edge_link: tuple[float, float],
    server_link: tuple[float, float] | None = None,
) -> Cluster:
    """An edge linked to every server by `edge_link` (Mbit/s, ms), servers to each other by `server_link`."""
    devices = [Device(edge.device.name, "edge", edge, int(edge_memory_gb * GB))]
    devices += [Device(name, "server", profile, int(memory_gb * GB)) for name, profile, memory_gb in servers]
    links: list[LinkProfile] = []
    for name, _, _ in servers:
        links.extend(link_pair(edge.device.name, name, *edge_link))
    if server_link is not None:
        for i, (a, _, _) in enumerate(servers):
            for b, _, _ in servers[i + 1 :]:
                links.extend(link_pair(a, b, *server_link))
    return Cluster(tuple(devices), tuple(links))


def chosen_split_plan(model: ModelRef, stages: tuple[Stage, ...], workload: Workload, edge: str) -> Plan:
    """A plan with `stages` as given (the first device `edge`, every other one a server), predicted
    from synthetic profiles on a 1 Gbit/s, 0.5 ms LAN: for tests and benchmarks that pick the split
    themselves and run it on real workers."""
    from partition.plan.codecs import DEFAULT_CODECS
    from partition.plan.costmodel import evaluate
    from partition.plan.planner import plan_id

    servers = sorted({stage.device for stage in stages if stage.device != edge})
    cluster = star_cluster(
        synthetic_profile(edge, model=model),
        8.0,
        [(name, synthetic_profile(name, model=model), 8.0) for name in servers],
        edge_link=(1000.0, 0.5),
        server_link=(1000.0, 0.5),
    )
    return Plan(
        plan_id=plan_id(cluster, stages, workload),
        epoch=1,
        model=model,
        edge=edge,
        stages=stages,
        workload=workload,
        predicted=evaluate(cluster, stages, workload, DEFAULT_CODECS),
        baselines=(),
    )


def halves_plan(model: ModelRef, n_units: int, new_tokens: int) -> Plan:
    """`edge` holds the first half of the units, one `server` the rest, raw: the fixed split of the
    benchmarks that measure the serving path rather than the planner."""
    half = n_units // 2
    stages = (Stage("edge", Segment(0, half), "raw"), Stage("server", Segment(half, n_units), "raw"))
    return chosen_split_plan(model, stages, Workload(prompt_tokens=16, new_tokens=new_tokens), "edge")
