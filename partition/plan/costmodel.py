"""The cost model (plan): predicted seconds and bytes of a chain of stages under a workload.

Every number the planner compares comes from the functions here; the solver's tables are built from
them and a chosen plan is re-evaluated by `evaluate`, so the two cannot drift apart.

Execution model (a request = P prompt tokens, then D - 1 decode steps; S sessions at once):
- TTFT: the S prompts go through every stage and hop in chain order as one batch (prefill fit at P).
- TPOT: one decode step of the S sessions as one batch, at the mean context reached, P + D/2 tokens
  (exact for decode fits linear in the context). A batch of S costs one step plus S - 1 extra tokens
  at the prefill's per-token rate, plus attention over each session's context.
- total = TTFT + (D - 1) x TPOT: the time to the D-th token (the first comes from prefill).
- round (throughput): the S sessions as S micro-batches of one; with t_i the time each resource
  (a device's compute, a link's encode + wire + decode) spends on one micro-batch, Alpa's formula
  gives sum of the chain's times + (S - 1) x max t_i.
Hops: encode on the sender, latency + bytes / bandwidth on the wire, decode on the receiver, and
HOP_SOFTWARE_S of message handling that a link probe does not see.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from partition.plan.cluster import Cluster
from partition.plan.codecs import CodecSpec
from partition.types import (
    HEAD,
    TOKEN_ID_BYTES,
    TOP_K_LOGITS_BYTES,
    DeviceProfile,
    LayerCost,
    LinkPrediction,
    LinkProfile,
    Prediction,
    Segment,
    Stage,
    StagePrediction,
    Workload,
    n_units,
)

# What a hop costs beyond the probed link and the codec: parsing and checking the step, its hop record,
# serializing it again, and waking an idle receiver, at both ends. `benchmarks/transport.py` measures
# a hop of our chain at 0.57-0.86 ms where a back-to-back echo (what `partition profile` probes) takes
# 0.12-0.20 ms one way, on a 2-core x86 host; in the wifi-edge lab hops took 0.8-1.4 ms over their probe.
HOP_SOFTWARE_S = 0.45e-3

# Token ids are integers: they always travel raw, whatever codecs the plan may use for activations.
TOKEN_CODEC = CodecSpec("raw", 4.0, 0.0, 0.0, lossless=True)
# After the head: the top K logits, token ids and fp32 values as they are (partition.transport.tensors).
# Picking them and rebuilding the logits cost per row (a top-K over the whole vocabulary, one row per
# session), whatever K is: `fixed_codec` spreads what the sender's and the edge's profiles measured for
# one row over that row's TOP_K_LOGITS_BYTES, so S sessions pay S rows.
LOGITS_CODEC = CodecSpec("top-k", 4.0, 0.0, 0.0, lossless=True)


def decode_context(workload: Workload) -> float:
    """Mean context length of the decode steps, in tokens."""
    return workload.prompt_tokens + workload.new_tokens / 2


def unit_prefill_s(cost: LayerCost, w: Workload) -> float:
    """Seconds to prefill S prompts of P tokens through one unit (the fixed cost is paid once)."""
    return cost.prefill.c0 + w.sessions * (cost.prefill.at(w.prompt_tokens) - cost.prefill.c0)


def unit_decode_s(cost: LayerCost, w: Workload) -> float:
    """Seconds of one batched decode step of S sessions through one unit."""
    context = decode_context(w)
    extra_tokens = w.sessions - 1
    return cost.decode.at(context) + extra_tokens * (cost.prefill.c1 + cost.decode.c1 * context)


def unit_step_s(cost: LayerCost, w: Workload) -> float:
    """Seconds of one session's decode step through one unit (one micro-batch)."""
    return cost.decode.at(decode_context(w))


def unit_memory_bytes(cost: LayerCost, w: Workload) -> int:
    """Bytes one unit holds: its weights plus the KV cache of S sessions at the full planned context."""
    return cost.weight_bytes + cost.kv_bytes_per_token * w.kv_tokens * w.sessions


def shared_weight_bytes(profile: DeviceProfile, *segments: tuple[int, int]) -> int:
    """Bytes the units of `segments` (each (start, end), all in one process) count twice: the tied
    embedding matrix, when they hold both the embedding and the head, where a single copy serves both
    (the whole model; the edge's front and tail pieces, which deploy loads that way)."""
    last = n_units(profile.model.n_blocks) - 1
    embed = any(start <= 0 < end for start, end in segments)
    head = any(start <= last < end for start, end in segments)
    return profile.tied_weight_bytes if embed and head else 0


def unit_objective_s(cost: LayerCost, w: Workload) -> float:
    """One unit's additive share of the objective: total_s for latency, the round's sum for throughput."""
    if w.objective == "latency":
        return unit_prefill_s(cost, w) + (w.new_tokens - 1) * unit_decode_s(cost, w)
    return unit_step_s(cost, w)


def is_token_cut(cut: int, n: int) -> bool:
    """Cut 0 carries the prompt's token ids, cut n the top logits; the others carry activations."""
    return cut in (0, n)


def fixed_codec(
    cut: int, n: int, sender: DeviceProfile | None = None, receiver: DeviceProfile | None = None
) -> CodecSpec:
    """The format of a cut no activation codec applies to (`is_token_cut`); after the head, with the
    top-K encode the `sender` (the head's device) and decode the `receiver` (the edge) measured per row
    (0 without a profile, or from one that did not measure them)."""
    if cut == 0:
        return TOKEN_CODEC
    return replace(
        LOGITS_CODEC,
        encode_s_per_byte=(sender.top_k_encode_s if sender is not None else 0.0) / TOP_K_LOGITS_BYTES,
        decode_s_per_byte=(receiver.top_k_decode_s if receiver is not None else 0.0) / TOP_K_LOGITS_BYTES,
    )


def cut_bytes_per_token(cost_before: LayerCost | None) -> int:
    """Bytes per token crossing the cut after `cost_before` (token ids before the embedding).

    After the head it is always the top-K logits the runtime sends, whatever an older profile says.
    """
    if cost_before is None:
        return TOKEN_ID_BYTES
    return TOP_K_LOGITS_BYTES if cost_before.kind == HEAD else cost_before.activation_bytes_per_token


@dataclass(frozen=True)
class HopCost:
    """What one hop costs for a workload (one link, one cut, one codec)."""

    codec: str  # codec name
    prefill_bytes: int  # bytes on the wire for the S prompts
    decode_bytes: int  # bytes on the wire per batched decode step
    prefill_s: float  # seconds: encode + latency + wire + decode of the prefill activations
    decode_s: float  # seconds per batched decode step
    step_s: float  # seconds per one-session step without latency (the link's time as a pipeline resource)
    latency_s: float  # one-way latency of the link, plus HOP_SOFTWARE_S

    def objective_s(self, w: Workload) -> float:
        """This hop's additive share of the objective (see `unit_objective_s`)."""
        if w.objective == "latency":
            return self.prefill_s + (w.new_tokens - 1) * self.decode_s
        return self.latency_s + self.step_s


def hop_cost(
    link: LinkProfile, codec: CodecSpec, bytes_per_token: int, to_head_output: bool, w: Workload
) -> HopCost:
    """Cost of sending a cut's tensor over `link` with `codec`.

    `to_head_output`: the cut after the head, where prefill returns the last position's logits only.
    """
    prefill_tokens = w.sessions * (1 if to_head_output else w.prompt_tokens)
    raw_prefill = prefill_tokens * bytes_per_token
    raw_decode = w.sessions * bytes_per_token
    wire_prefill, wire_decode, wire_step = (
        codec.wire_bytes(raw) for raw in (raw_prefill, raw_decode, bytes_per_token)
    )
    latency = link.latency_s + HOP_SOFTWARE_S
    return HopCost(
        codec=codec.name,
        prefill_bytes=wire_prefill,
        decode_bytes=wire_decode,
        prefill_s=latency + wire_prefill / link.bandwidth_Bps + codec.codec_s(raw_prefill),
        decode_s=latency + wire_decode / link.bandwidth_Bps + codec.codec_s(raw_decode),
        step_s=wire_step / link.bandwidth_Bps + codec.codec_s(bytes_per_token),
        latency_s=latency,
    )


def best_hop(
    link: LinkProfile,
    cut: int,
    n: int,
    bytes_per_token: int,
    codecs: tuple[CodecSpec, ...],
    w: Workload,
    sender: DeviceProfile | None = None,
    receiver: DeviceProfile | None = None,
) -> HopCost:
    """The cheapest codec for this hop under the workload's objective (ties: the first in the table).
    `sender` and `receiver`: the profiles of the link's ends (the top-K logits' costs after the head).

    Choosing per hop is exact: a hop's codec changes only that hop's time, and the codec with the
    smallest step time also has the smallest share of the sum (both objectives are monotone in both).
    """
    if is_token_cut(cut, n):
        return hop_cost(link, fixed_codec(cut, n, sender, receiver), bytes_per_token, cut == n, w)
    options = [hop_cost(link, codec, bytes_per_token, False, w) for codec in codecs]
    return min(options, key=lambda hop: (hop.objective_s(w), hop.step_s))


def stage_prediction(cluster: Cluster, stage: Stage, w: Workload) -> StagePrediction:
    profile = cluster.device(stage.device).profile
    costs = [profile.unit_cost(u) for u in range(stage.segment.start, stage.segment.end)]
    return StagePrediction(
        device=stage.device,
        segment=stage.segment,
        prefill_s=sum(unit_prefill_s(c, w) for c in costs),
        decode_s=sum(unit_decode_s(c, w) for c in costs),
        step_s=sum(unit_step_s(c, w) for c in costs),
        memory_bytes=sum(unit_memory_bytes(c, w) for c in costs)
        - shared_weight_bytes(profile, (stage.segment.start, stage.segment.end)),
    )


def hops(cluster: Cluster, stages: tuple[Stage, ...]) -> list[tuple[str, str, int, str]]:
    """(src, dst, cut, codec) of every hop of the chain, from the edge and back to it."""
    edge = cluster.edge.name
    n = cluster.model.n_units
    out: list[tuple[str, str, int, str]] = []
    if stages[0].device != edge:
        out.append((edge, stages[0].device, 0, TOKEN_CODEC.name))
    for before, after in zip(stages, stages[1:], strict=False):
        out.append((before.device, after.device, before.segment.end, before.codec_out))
    if stages[-1].device != edge:
        out.append((stages[-1].device, edge, n, stages[-1].codec_out))
    return out


def evaluate(
    cluster: Cluster, stages: tuple[Stage, ...], w: Workload, codecs: tuple[CodecSpec, ...]
) -> Prediction:
    """Predicted times of `stages` (validated by the caller) with the codecs each stage names."""
    n = n_units(cluster.model.n_blocks)
    by_name = {codec.name: codec for codec in codecs}
    stage_predictions = tuple(stage_prediction(cluster, stage, w) for stage in stages)
    links: list[LinkPrediction] = []
    latencies = 0.0
    for src, dst, cut, codec_name in hops(cluster, stages):
        profile = cluster.device(src).profile
        per_token = cut_bytes_per_token(profile.unit_cost(cut - 1) if cut > 0 else None)
        receiver = cluster.device(dst).profile
        codec = fixed_codec(cut, n, profile, receiver) if is_token_cut(cut, n) else by_name[codec_name]
        hop = hop_cost(cluster.link(src, dst), codec, per_token, cut == n, w)
        latencies += hop.latency_s
        links.append(
            LinkPrediction(
                src,
                dst,
                cut,
                hop.codec,
                hop.prefill_bytes,
                hop.decode_bytes,
                hop.prefill_s,
                hop.decode_s,
                hop.step_s,
            )
        )
    ttft = sum(s.prefill_s for s in stage_predictions) + sum(h.prefill_s for h in links)
    tpot = sum(s.decode_s for s in stage_predictions) + sum(h.decode_s for h in links)
    total = ttft + (w.new_tokens - 1) * tpot
    chain_s = sum(s.step_s for s in stage_predictions) + sum(h.step_s for h in links) + latencies
    per_device: dict[str, float] = {}
    for s in stage_predictions:  # the edge may run two stages; they share its compute
        per_device[s.device] = per_device.get(s.device, 0.0) + s.step_s
    bottleneck = max([*per_device.values(), *(h.step_s for h in links)])
    round_s = chain_s + (w.sessions - 1) * bottleneck
    return Prediction(
        ttft_s=ttft,
        tpot_s=tpot,
        total_s=total,
        round_s=round_s,
        tokens_per_s=w.sessions / round_s
        if round_s > 0
        else 0.0,  # 0: a chain that costs nothing has no rate
        objective_s=total if w.objective == "latency" else round_s,
        stages=stage_predictions,
        links=tuple(links),
    )


def with_best_codecs(
    cluster: Cluster, placement: list[tuple[str, int, int]], w: Workload, codecs: tuple[CodecSpec, ...]
) -> tuple[Stage, ...]:
    """Stages for (device, start, end) triples, each sending with the codec `best_hop` picks.

    Links must exist between consecutive devices (validate first); a missing one gets "raw", and so
    does the stage holding the head: its logits go as the top K, or raw when a step asks for all.
    """
    n = cluster.model.n_units
    edge = cluster.edge.name
    stages = []
    for pos, (device, start, end) in enumerate(placement):
        nxt = placement[pos + 1][0] if pos + 1 < len(placement) else edge
        link = cluster.link(device, nxt) if nxt != device else None
        if link is None or end == n:
            codec = TOKEN_CODEC.name
        else:
            per_token = cut_bytes_per_token(
                cluster.device(device).profile.unit_cost(end - 1) if end > 0 else None
            )
            codec = best_hop(link, end, n, per_token, codecs, w).codec
        stages.append(Stage(device, Segment(start, end), codec))
    return tuple(stages)
