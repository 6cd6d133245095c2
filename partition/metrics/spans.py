"""Per-hop timing spans (serve -> metrics): where each token's time went, hop by hop.

One span is one visit of a message to a stage: the sender encodes the activation, it crosses the link,
the receiver decodes it, waits in its queue and runs its segment. A token through an edge -> A -> B ->
edge chain makes 4 spans (hops 0..3); hop 0 starts at the edge from token ids, so its link fields are 0.
Wire time is one-way, corrected by the coordinator's clock-offset estimate for the receiver.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from partition.metrics.stats import percentile


@dataclass(frozen=True)
class HopSpan:
    session: str  # session id
    token: int  # generation step: 0 = prefill (the prompt), i = the step that produced token i + 1
    hop: int  # position in the chain for this step, 0-based
    src: str  # device that sent the message ("" for hop 0: the input comes from the client)
    dst: str  # device that received and computed it
    codec: str  # codec on this link ("" for hop 0)
    n_tokens: int  # tokens in the message: prompt length at prefill, 1 when decoding
    payload_bytes: int  # bytes of the encoded activation on the wire
    start_s: float  # seconds since the session started (coordinator clock) when the sender began encoding
    encode_s: float  # seconds, at the sender
    wire_s: float  # seconds, one way, clock-offset corrected
    decode_s: float  # seconds, at the receiver
    queue_s: float  # seconds waiting at the receiver before its compute started
    compute_s: float  # seconds of the receiver's segment forward
    # Sessions whose steps the receiver computed in that same forward (a worker batching decode steps
    # that waited together); 1 for a step computed alone, and for the edge's own segments.
    batch: int = 1

    @property
    def link_s(self) -> float:
        """Seconds the activation spent between the two segments: encode + wire + decode."""
        return self.encode_s + self.wire_s + self.decode_s

    @property
    def total_s(self) -> float:
        return self.link_s + self.queue_s + self.compute_s


SPAN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(HopSpan))


@dataclass(frozen=True)
class LinkSummary:
    """One link over a run (the `hops` entries of `serve --json`)."""

    src: str
    dst: str
    codec: str
    n_messages: int
    latency_p50_s: float  # encode + wire + decode, seconds
    latency_p99_s: float
    wire_p50_s: float  # wire alone, seconds
    bytes_per_token: float  # payload bytes per token carried (decode steps and prefill together)


@dataclass(frozen=True)
class StageSummary:
    """One stage visit position over a run: its queue and compute time."""

    hop: int
    device: str
    n_messages: int
    compute_p50_s: float
    compute_p99_s: float
    queue_p50_s: float
    batch_mean: float = 1.0  # sessions computed in the same forward, on average over its steps


def _decode_only(spans: Iterable[HopSpan], decode_only: bool) -> list[HopSpan]:
    return [s for s in spans if s.token > 0] if decode_only else list(spans)


def link_summaries(spans: Iterable[HopSpan], decode_only: bool = True) -> list[LinkSummary]:
    """Per (src, dst) link, in hop order; decode steps only by default (prefill messages are far larger)."""
    groups: dict[tuple[int, str, str], list[HopSpan]] = {}
    for span in _decode_only(spans, decode_only):
        if span.src:
            groups.setdefault((span.hop, span.src, span.dst), []).append(span)
    summaries = []
    for (_, src, dst), group in sorted(groups.items()):
        latencies = [s.link_s for s in group]
        summaries.append(
            LinkSummary(
                src=src,
                dst=dst,
                codec=group[0].codec,
                n_messages=len(group),
                latency_p50_s=percentile(latencies, 50),
                latency_p99_s=percentile(latencies, 99),
                wire_p50_s=percentile([s.wire_s for s in group], 50),
                bytes_per_token=sum(s.payload_bytes for s in group) / sum(s.n_tokens for s in group),
            )
        )
    return summaries


def outside_spans_p50_s(spans: Iterable[HopSpan]) -> float | None:
    """Median seconds of a decode step that no span covers: from one step's start to the next step's
    start of the same session, less the step's spans. That is mostly the coordinator's own work on the
    edge for each token (picking it, its text, handing the step to its I/O thread and back), which no
    stage or link reports, plus each stage's hand-off from its compute to its send. None without two
    consecutive decode steps."""
    steps: dict[tuple[str, int], list[HopSpan]] = {}
    for span in spans:
        steps.setdefault((span.session, span.token), []).append(span)
    gaps = []
    for (session, token), group in steps.items():
        following = steps.get((session, token + 1))
        if token == 0 or following is None:  # the prompt's step is no decode step
            continue
        step_s = min(s.start_s for s in following) - min(s.start_s for s in group)
        gaps.append(step_s - sum(s.total_s for s in group))
    return percentile(gaps, 50) if gaps else None


def stage_summaries(spans: Iterable[HopSpan], decode_only: bool = True) -> list[StageSummary]:
    """Per hop position (a device may appear twice: the edge runs the first segment and the head).

    A hop's end that computed nothing in any step runs no segment (the edge when a server holds the
    head: it only samples) and is not a stage.
    """
    groups: dict[tuple[int, str], list[HopSpan]] = {}
    for span in _decode_only(spans, decode_only):
        groups.setdefault((span.hop, span.dst), []).append(span)
    groups = {key: group for key, group in groups.items() if any(s.compute_s > 0 for s in group)}
    return [
        StageSummary(
            hop=hop,
            device=device,
            n_messages=len(group),
            compute_p50_s=percentile([s.compute_s for s in group], 50),
            compute_p99_s=percentile([s.compute_s for s in group], 99),
            queue_p50_s=percentile([s.queue_s for s in group], 50),
            batch_mean=sum(s.batch for s in group) / len(group),
        )
        for (hop, device), group in sorted(groups.items())
    ]
