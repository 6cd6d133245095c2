"""Turn one pipeline step's stamps into per-hop spans (serve -> metrics).

A step through edge -> stage 1 .. stage K -> edge gives K + 1 links, or K + 2 spans when the edge runs
a front segment. Wire time of a link is (receiver's recv stamp - sender's send stamp), both moved to
the coordinator's clock with each worker's offset estimate; encode time is the sender's, decode,
queue and compute times are the receiver's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from partition.coordinator.clock import ClockEstimate
from partition.metrics.spans import HopSpan


@dataclass(frozen=True)
class RemoteHop:
    """What one remote stage reported for one step (from the HopTiming record)."""

    device: str
    recv_unix_ns: int  # stage clock
    sent_unix_ns: int  # stage clock
    queue_s: float
    decode_s: float
    compute_s: float
    encode_s: float
    bytes_in: int
    bytes_out: int
    codec_in: str  # how its input arrived
    batch: int = 1  # sessions it computed in the same forward (HopTiming.batch; 0 from older workers: 1)


@dataclass(frozen=True)
class EdgeTimes:
    """The coordinator's side of one step, on its own clock."""

    session: str
    token: int  # 0 = prefill, i = the step producing token i + 1
    n_tokens: int
    session_start_ns: int  # when the session started
    step_start_ns: int  # when the step started at the edge
    front_compute_s: float  # edge segment before the chain (0 when the edge holds none)
    encode_s: float  # encoding the chain's input
    sent_unix_ns: int  # when the chain's input was written
    bytes_sent: int
    received_unix_ns: int  # when the chain's result was read
    decode_s: float  # decoding the chain's result
    bytes_received: int
    codec_received: str  # how the result arrived ("top-k" when a worker holding the head sent the top logits)
    tail_compute_s: float  # edge segment after the chain (head), 0 when none


def step_spans(
    edge: str,
    edge_times: EdgeTimes,
    hops: Sequence[RemoteHop],
    clocks: Sequence[ClockEstimate],
    has_front: bool,
    has_tail: bool,
) -> list[HopSpan]:
    """Spans of one step; each link's codec is the one its receiver saw. `clocks[i]` is remote stage i's clock."""
    e = edge_times
    base = e.session_start_ns

    def since_start(ns: int) -> float:
        return (ns - base) / 1e9

    spans: list[HopSpan] = []
    if has_front:
        spans.append(
            _span(e, len(spans), "", edge, "", 0, since_start(e.step_start_ns), 0, 0, 0, 0, e.front_compute_s)
        )
    prev_device, prev_sent_ns, prev_encode_s = edge, e.sent_unix_ns, e.encode_s
    for index, hop in enumerate(hops):
        recv_ns = clocks[index].to_local_ns(hop.recv_unix_ns)
        spans.append(
            _span(
                e, len(spans), prev_device, hop.device, hop.codec_in, hop.bytes_in,
                since_start(prev_sent_ns) - prev_encode_s, prev_encode_s, (recv_ns - prev_sent_ns) / 1e9,
                hop.decode_s, hop.queue_s, hop.compute_s, hop.batch,
            )
        )  # fmt: skip
        prev_device = hop.device
        prev_sent_ns = clocks[index].to_local_ns(hop.sent_unix_ns)
        prev_encode_s = hop.encode_s
    if hops:
        # the result's way back to the edge, plus the head if the edge runs it
        spans.append(
            _span(
                e, len(spans), prev_device, edge, e.codec_received, e.bytes_received,
                since_start(prev_sent_ns) - prev_encode_s, prev_encode_s,
                (e.received_unix_ns - prev_sent_ns) / 1e9, e.decode_s, 0.0, e.tail_compute_s,
            )
        )  # fmt: skip
    elif has_tail:
        spans.append(
            _span(e, len(spans), "", edge, "", 0, since_start(e.step_start_ns), 0, 0, 0, 0, e.tail_compute_s)
        )
    return spans


def _span(
    e: EdgeTimes,
    hop,
    src,
    dst,
    codec,
    nbytes,
    start_s,
    encode_s,
    wire_s,
    decode_s,
    queue_s,
    compute_s,
    batch=1,
):
    return HopSpan(
        session=e.session,
        token=e.token,
        hop=hop,
        src=src,
        dst=dst,
        codec=codec,
        n_tokens=e.n_tokens,
        payload_bytes=nbytes,
        start_s=start_s,
        encode_s=encode_s,
        wire_s=max(wire_s, 0.0),  # an offset estimate off by more than the wire time must not go negative
        decode_s=decode_s,
        queue_s=queue_s,
        compute_s=compute_s,
        batch=batch,
    )
