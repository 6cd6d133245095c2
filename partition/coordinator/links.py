"""Measure a link (profile): one-way latency and bandwidth in each direction, from Probe round trips.

Small probes give the round trip; one-way latency is half the fastest one (the least queued). Probes
that carry `payload` bytes up (or ask for them down) take longer by the time those bytes need on the
wire, so bandwidth = payload / (fastest loaded round trip - fastest empty round trip).
"""

from __future__ import annotations

from collections.abc import Sequence

from partition.types import LinkProfile

LATENCY_ROUNDS = 12
LOADED_ROUNDS = 4
PAYLOAD_BYTES = 256 * 1024  # large next to headers and to a 50 ms window of a 10 Mbit/s link
MIN_EXTRA_S = 1e-5  # a payload that arrived "instantly" means a link faster than we can resolve


def rtts(samples: Sequence) -> list[float]:
    """Round trips in seconds on the wire (the target's own time removed)."""
    return [((s.t3 - s.t0) - (s.t2 - s.t1)) / 1e9 for s in samples]


def link_from_probes(src: str, dst: str, empty: Sequence, up: Sequence, down: Sequence, payload: int):
    """(src -> dst, dst -> src) link profiles from probes sent by `src`."""
    base = min(rtts(empty))
    latency = base / 2
    up_bw = payload / max(min(rtts(up)) - base, MIN_EXTRA_S)
    down_bw = payload / max(min(rtts(down)) - base, MIN_EXTRA_S)
    return LinkProfile(src, dst, latency, up_bw), LinkProfile(dst, src, latency, down_bw)


async def measure_from_here(client, src: str, dst: str, payload: int = PAYLOAD_BYTES):
    """Link between this process (device `src`) and the worker behind `client` (device `dst`)."""
    empty = await client.probe(LATENCY_ROUNDS)
    up = await client.probe(LOADED_ROUNDS, payload_bytes=payload)
    down = await client.probe(LOADED_ROUNDS, reply_bytes=payload)
    return link_from_probes(src, dst, empty, up, down, payload)


async def measure_between(client, src: str, dst: str, dst_address: str, payload: int = PAYLOAD_BYTES):
    """Link between the worker behind `client` (device `src`) and the worker at `dst_address`."""
    empty = await client.probe_link(dst_address, LATENCY_ROUNDS)
    up = await client.probe_link(dst_address, LOADED_ROUNDS, payload_bytes=payload)
    down = await client.probe_link(dst_address, LOADED_ROUNDS, reply_bytes=payload)
    return link_from_probes(src, dst, empty, up, down, payload)
