"""Random clusters and a brute-force planner that the exact solver is checked against.

The brute force shares nothing with the solver but the cost model's per-stage and per-hop functions:
it enumerates every chain (edge prefix, ordered distinct servers with every contiguous split, edge
suffix) and every codec on every hop, and scores each with the formulas of `evaluate`.
"""

from __future__ import annotations

import itertools
import math
import random

from partition.plan.cluster import GB, Cluster, Device
from partition.plan.codecs import DEFAULT_CODECS, CodecSpec
from partition.plan.costmodel import (
    cut_bytes_per_token,
    fixed_codec,
    hop_cost,
    is_token_cut,
    shared_weight_bytes,
    stage_prediction,
)
from partition.types import (
    TOP_K_LOGITS_BYTES,
    DeviceIdentity,
    DeviceProfile,
    Fit,
    LayerCost,
    LinkProfile,
    ModelRef,
    Pinning,
    Segment,
    Stage,
    Workload,
)


class BudgetExceeded(Exception):
    pass


def random_fit(rng: random.Random, scale: float, quadratic: bool) -> Fit:
    return Fit(
        rng.uniform(0, 2) * scale,
        rng.uniform(0, 0.5) * scale / 100,
        rng.uniform(0, 1e-4) * scale if quadratic else 0.0,
    )


def random_profile(
    rng: random.Random, name: str, model: ModelRef, hidden: int, slow: float = 1.0
) -> DeviceProfile:
    speed = 10 ** rng.uniform(-1, 1) / slow

    def cost(kind: str, weights: int, kv: int, out: int) -> LayerCost:
        return LayerCost(
            kind, random_fit(rng, 1e-3 / speed, True), random_fit(rng, 1e-3 / speed, False), weights, kv, out
        )

    block_weights = rng.randint(1, 100) * 1_000_000
    embed = cost("embed", rng.randint(1, 200) * 1_000_000, 0, 4 * hidden)
    block = cost("block", block_weights, rng.randint(0, 4000), 4 * hidden)
    head = cost("head", rng.randint(1, 200) * 1_000_000, 0, TOP_K_LOGITS_BYTES)
    # About half the models tie their embeddings (a whole-model segment holds that matrix once); the
    # choice draws nothing from rng, so the other tests' random clusters stay as they were.
    tied = block_weights // 1_000_000 % 2 == 0
    return DeviceProfile(
        device=DeviceIdentity(name, "random", 1, None, 10 * 10**9),
        model=model,
        dtype="float32",
        embed=embed,
        block=block,
        head=head,
        tied_weight_bytes=min(embed.weight_bytes, head.weight_bytes) if tied else 0,
    )


def random_codecs(rng: random.Random, most: int = 3) -> tuple[CodecSpec, ...]:
    pool = list(DEFAULT_CODECS) + [
        CodecSpec(
            f"c{i}",
            rng.uniform(0.3, 4),
            rng.uniform(0, 1e-8),
            rng.uniform(0, 1e-8),
            False,
            rng.uniform(0, 1e-4),
        )
        for i in range(2)
    ]
    return tuple(rng.sample(pool, rng.randint(1, most)))


def random_case(
    rng: random.Random, max_units: int = 12, max_devices: int = 6
) -> tuple[Cluster, Workload, tuple[CodecSpec, ...], Pinning]:
    """A random cluster (edge + up to max_devices - 1 servers, some identical), workload, codecs, pinning."""
    n_blocks = rng.randint(1, max_units - 2)
    hidden = rng.choice([64, 576, 4096])
    model = ModelRef("random", "digest", n_blocks)
    structured = rng.random() < 0.4  # servers in classes with one memory and uniform links: device kinds
    n_servers = rng.randint(2 if structured else 0, max_devices - 1)
    w = Workload(
        prompt_tokens=rng.randint(1, 256),
        new_tokens=rng.randint(1, 64),
        sessions=rng.randint(1, 4),
        objective=rng.choice(["latency", "throughput"]),
    )
    profiles = [random_profile(rng, f"p{i}", model, hidden) for i in range(rng.randint(1, n_servers + 1))]
    if structured:  # a slow edge, so that chains through several small servers pay
        edge_profile = random_profile(rng, "edge", model, hidden, slow=30.0)
    else:
        edge_profile = random_profile(rng, "edge", model, hidden) if rng.random() < 0.7 else profiles[0]

    def memory(profile: DeviceProfile, choices=(0.2, 0.4, 0.6, 0.8, 1.2, 3.0)) -> int:
        whole = sum(
            profile.unit_cost(u).weight_bytes
            + profile.unit_cost(u).kv_bytes_per_token * w.kv_tokens * w.sessions
            for u in range(n_blocks + 2)
        )
        return int(whole * rng.choice(choices))

    # Small servers make chains through several of them necessary.
    spread = max(n_servers, 1) / rng.choice([1.3, 1.8, 2.5])
    server_choices = (1 / spread,) if structured else (0.2, 0.4, 0.6, 0.8, 1.2, 3.0)
    shared_memory = {id(p): memory(p, server_choices) for p in profiles}
    devices = [Device("edge", "edge", edge_profile, memory(edge_profile, (0.4, 0.6, 0.8, 1.2, 3.0)))]
    server_class = {}
    for i in range(n_servers):
        profile = rng.choice(profiles)
        mem = shared_memory[id(profile)] if structured or rng.random() < 0.6 else memory(profile)
        devices.append(Device(f"s{i}", "server", profile, mem))
        server_class[f"s{i}"] = id(profile)
    server_class["edge"] = "edge"
    link_kinds = [(10 ** rng.uniform(-0.5, 4) * 1e6 / 8, rng.uniform(0, 0.05)) for _ in range(3)]
    class_links: dict = {}
    links = []
    for a, b in itertools.combinations([d.name for d in devices], 2):
        if structured:
            key = tuple(sorted(map(str, (server_class[a], server_class[b]))))
            if key not in class_links:
                class_links[key] = rng.choice(link_kinds) if rng.random() > 0.1 else None
            if class_links[key] is None:
                continue
            bw, lat = class_links[key]
            links += [LinkProfile(a, b, lat, bw), LinkProfile(b, a, lat, bw)]
            continue
        if rng.random() < 0.15:
            continue  # not connected
        bw, lat = rng.choice(link_kinds)
        links.append(LinkProfile(a, b, lat, bw))
        if rng.random() < 0.2:
            bw, lat = rng.choice(link_kinds)
        if rng.random() > 0.05:
            links.append(LinkProfile(b, a, lat, bw))
    # Every codec multiplies the chains to enumerate; big clusters get fewer.
    codecs = random_codecs(rng, most=2 if n_servers >= 4 and n_blocks >= 7 else 3)
    draw = rng.random()  # one draw, so that the cases stay what they were before pinning had two parts
    pin = Pinning(embed=draw < 0.7, head=draw < 0.35 or draw > 0.85)
    return Cluster(tuple(devices), tuple(links)), w, codecs, pin


def brute_force(
    cluster: Cluster, w: Workload, codecs: tuple[CodecSpec, ...], pin: Pinning, budget: int = 200_000
) -> tuple[float, tuple[Stage, ...]] | None:
    """The best chain by enumeration, or None when none fits; BudgetExceeded past `budget` chains.

    Partial chains carry (sum, largest item) so that each complete chain costs O(1) to score.
    """
    n = cluster.model.n_units
    lo, hi = pin.server_units(n)
    edge = cluster.edge
    W = w.sessions - 1 if w.objective == "throughput" else 0
    latency = w.objective == "latency"
    stage_cache: dict = {}
    hop_cache: dict = {}
    count = 0
    best: list = [math.inf, None]

    def stage(device: str, i: int, j: int):
        """(memory, share of the sum, pipeline item) of a stage."""
        key = (device, i, j)
        if key not in stage_cache:
            p = stage_prediction(cluster, Stage(device, Segment(i, j), "raw"), w)
            share = p.prefill_s + (w.new_tokens - 1) * p.decode_s if latency else p.step_s
            stage_cache[key] = (p.memory_bytes, share, p.step_s)
        return stage_cache[key]

    def hop_options(src: str, dst: str, cut: int):
        """[(codec, share of the sum, pipeline item)] for every codec allowed at this cut."""
        key = (src, dst, cut)
        if key not in hop_cache:
            link = cluster.link(src, dst)
            options = []
            if link is not None:
                per_token = cut_bytes_per_token(
                    cluster.device(src).profile.unit_cost(cut - 1) if cut > 0 else None
                )
                for codec in [fixed_codec(cut, n)] if is_token_cut(cut, n) else codecs:
                    h = hop_cost(link, codec, per_token, cut == n, w)
                    share = (
                        h.prefill_s + (w.new_tokens - 1) * h.decode_s if latency else h.latency_s + h.step_s
                    )
                    options.append((h.codec, share, h.step_s))
            hop_cache[key] = options
        return hop_cache[key]

    def score(total: float, items: float, edge_item: float, chain: tuple) -> None:
        nonlocal count
        count += 1
        if count > budget:
            raise BudgetExceeded
        value = total + W * max(items, edge_item)
        if value < best[0]:
            best[0], best[1] = value, chain

    def extend(i, prev, used, total, items, front, prefix_mem, prefix_item, chain) -> None:
        # close: back to the edge, which runs [i, n) in the process that runs its front [0, front)
        if used and i <= hi:
            mem, share, item = stage(edge.name, i, n) if i < n else (0, 0.0, 0.0)
            mem -= shared_weight_bytes(edge.profile, (0, front), (i, n))
            if prefix_mem + mem <= edge.memory_bytes:
                for codec, h_share, h_item in hop_options(prev, edge.name, i):
                    done = _with_codec(chain, codec) + ((edge.name, i, n, "raw"),) if i < n else chain
                    score(total + h_share + share, max(items, h_item), prefix_item + item, done)
        for server in cluster.servers:
            if server.name in used:
                continue
            options = hop_options(prev, server.name, i)
            for j in range(i + 1, hi + 1):
                mem, share, item = stage(server.name, i, j)
                if mem > server.memory_bytes:
                    break
                for codec, h_share, h_item in options:
                    extend(
                        j,
                        server.name,
                        used | {server.name},
                        total + h_share + share,
                        max(items, h_item, item),
                        front,
                        prefix_mem,
                        prefix_item,
                        _with_codec(chain, codec) + ((server.name, i, j, "raw"),),
                    )

    mem, share, item = stage(edge.name, 0, n)
    if mem <= edge.memory_bytes:
        score(share, 0.0, item, ((edge.name, 0, n, "raw"),))
    for a in range(lo, n):
        mem, share, item = stage(edge.name, 0, a) if a > 0 else (0, 0.0, 0.0)
        if mem > edge.memory_bytes:
            break
        extend(a, edge.name, frozenset(), share, 0.0, a, mem, item, ((edge.name, 0, a, "raw"),) if a else ())
    if best[1] is None:
        return None
    return best[0], tuple(Stage(d, Segment(i, j), codec) for d, i, j, codec in best[1])


def _with_codec(chain: tuple, codec: str) -> tuple:
    """`chain` with its last stage sending with `codec` (token ids always go raw)."""
    if not chain:
        return chain
    d, i, j, _ = chain[-1]
    return chain[:-1] + ((d, i, j, codec),)


def random_cases(seed: int, count: int, budget: int = 60_000):
    """`count` random cases whose brute force stays under `budget` chains, with their brute-force optimum."""
    rng = random.Random(seed)
    made = 0
    while made < count:
        case = random_case(rng)
        try:
            best = brute_force(*case, budget=budget)
        except BudgetExceeded:
            continue
        made += 1
        yield case, best


def memory_gb(cluster: Cluster) -> dict[str, float]:
    return {d.name: d.memory_bytes / GB for d in cluster.devices}
