"""The text a user reads after `partition plan` (plan): stages, hops, memory, times, baselines."""

from __future__ import annotations

from partition.plan.cluster import GB, Cluster
from partition.plan.codecs import DEFAULT_CODECS, CodecSpec
from partition.types import Plan, Prediction, Segment, unit_name


def layers(segment: Segment, n_blocks: int) -> str:
    """`embed+block.0-3`, `block.4-29`, `head`: the units of a segment in words."""
    parts = []
    if segment.has_embed:
        parts.append("embed")
    blocks = segment.blocks(n_blocks)
    if len(blocks) == 1:
        parts.append(unit_name(blocks[0] + 1, n_blocks))
    elif len(blocks) > 1:
        parts.append(f"block.{blocks[0]}-{blocks[-1]}")
    if segment.has_head(n_blocks):
        parts.append("head")
    return "+".join(parts)


def seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def size(n_bytes: float) -> str:
    for unit, scale in (("GB", GB), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes:.0f} B"


def format_plan(plan: Plan, cluster: Cluster, codecs: tuple[CodecSpec, ...] = DEFAULT_CODECS) -> str:
    """`codecs`: the table the plan was made with (it says which codecs are lossy)."""
    w, pred, n_blocks = plan.workload, plan.predicted, plan.model.n_blocks
    lossy = {codec.name for codec in codecs if not codec.lossless}
    lines = [
        f"plan {plan.plan_id}  epoch {plan.epoch}  model {plan.model.name} ({plan.model.n_units} units)  "
        f"{w.objective} objective: {w.prompt_tokens} prompt tokens, {w.new_tokens} new, {w.sessions} session(s)",
        "",
        f"{'stage':<6} {'device':<14} {'units':<9} {'layers':<22} {'memory used / offered':<22} "
        f"{'prefill':>10} {'per token':>10}",
    ]
    hops = {link.cut: link for link in pred.links}
    if 0 in hops:
        lines.append(_hop_line(hops[0], lossy))
    for index, (stage, sp) in enumerate(zip(plan.stages, pred.stages, strict=True), start=1):
        offered = cluster.device(stage.device).memory_bytes
        memory = f"{size(sp.memory_bytes)} / {offered / GB:.2f} GB"
        lines.append(
            f"{index:<6} {stage.device:<14} {str(stage.segment):<9} {layers(stage.segment, n_blocks):<22} "
            f"{memory:<22} {seconds(sp.prefill_s):>10} {seconds(sp.decode_s):>10}"
        )
        if stage.segment.end in hops:
            lines.append(_hop_line(hops[stage.segment.end], lossy))
    idle = [name for name in plan.unused if name not in plan.left_out]
    reachable = {d.name for d in cluster.round_trip_servers()}
    cut_off = [name for name in idle if name not in reachable]
    idle = [name for name in idle if name not in cut_off]
    if idle:
        lines.append(f"unused: {', '.join(idle)} (no faster chain uses {'them' if len(idle) > 1 else 'it'})")
    if cut_off:
        lines.append(
            f"unused: {', '.join(cut_off)} (no chain can reach {'them' if len(cut_off) > 1 else 'it'} from the "
            "edge and come back: add [[link]] entries)"
        )
    if plan.left_out:
        faster = 1 - plan.optimum_s / pred.objective_s
        them = "them" if len(plan.left_out) > 1 else "it"
        lines.append(
            f"left out: {', '.join(plan.left_out)} (the exact optimum, with {them}, is {faster:.3%} faster: "
            f"under --min-gain {plan.min_gain:.1%}; --min-gain 0 keeps {them})"
        )
    if any(link.codec in lossy for link in pred.links):
        lines.append(
            "lossy links: the tokens may differ from the whole model's (--codecs raw shuffle-zstd keeps "
            "every link exact)"
        )
    lines += ["", "predicted: " + _summary(pred, w.new_tokens, w.sessions), ""]
    lines.append(f"{'split':<31} {'TTFT':>10} {'TPOT':>10} {'total':>10} {'tok/s':>8}  objective vs plan")
    lines.append(_row("plan", pred, pred))
    for baseline in plan.baselines:
        if baseline.predicted is None:
            lines.append(f"{baseline.name:<31} infeasible: {baseline.infeasible}")
        else:
            lines.append(_row(baseline.name, baseline.predicted, pred))
    return "\n".join(lines)


def _hop_line(link, lossy: set[str]) -> str:
    volume = f"{size(link.prefill_bytes)} + {size(link.decode_bytes)}/tok"
    codec = f"{link.codec} (lossy)" if link.codec in lossy else link.codec
    return (
        f"{'':<6} {'-> ' + link.dst:<14} {'cut ' + str(link.cut):<9} {codec:<22} {volume:<22} "
        f"{seconds(link.prefill_s):>10} {seconds(link.decode_s):>10}"
    )


def _summary(pred: Prediction, new_tokens: int, sessions: int) -> str:
    """The latency figures and the rate. With several sessions they come from two models (costmodel.py):
    TTFT/TPOT of the sessions stepped as one batch, the rate of a round of them as micro-batches in turn
    (the throughput objective), so the rate is not sessions x tokens / total."""
    latency = f"TTFT {seconds(pred.ttft_s)}, TPOT {seconds(pred.tpot_s)}, {new_tokens} tokens in {seconds(pred.total_s)}"
    if sessions == 1:
        return f"{latency}; {pred.tokens_per_s:.1f} tokens/s"
    return (
        f"{latency} (the {sessions} sessions as one batch); {pred.tokens_per_s:.1f} tokens/s (as "
        f"{sessions} micro-batches in turn: a decode round of {seconds(pred.round_s)})"
    )


def _row(name: str, pred: Prediction, plan: Prediction) -> str:
    ratio = pred.objective_s / plan.objective_s if plan.objective_s > 0 else 1.0
    return (
        f"{name:<31} {seconds(pred.ttft_s):>10} {seconds(pred.tpot_s):>10} {seconds(pred.total_s):>10} "
        f"{pred.tokens_per_s:>8.1f}  {ratio:.2f}x"
    )
