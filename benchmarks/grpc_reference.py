"""Bare gRPC references for benchmarks/transport.py (serve): what a hop costs when it does nothing.

- Echo: one generic bidi handler that yields back what it reads. RTT / 2 over an open stream is the
  least one message can cost between two Python gRPC processes.
- Relay chain: K processes, each writing what it reads to the next one over an open stream; the last
  queues it for the RETURN stream the client opened, as our last stage does. Nothing is parsed and
  no tensor is made, so the chain's shape (K + 1 hops, a hand-off to the RETURN stream) is all it
  measures: our stage chain minus its per-step work (message parsing, checks, tensor decode and
  encode, hop records).
- Computing relay chain: the same, but each relay first streams W weights through the CPU per
  message (one matrix-vector product, as a transformer block does for one token), and adds the
  seconds it took to the float64 in the payload's first 8 bytes. The client takes that sum off the
  pass: what is left is the relay's transport, run on the caches a stage's compute leaves behind.

Each server is its own process (`python benchmarks/grpc_reference.py echo READY` or `relay READY
WEIGHTS [DOWNSTREAM]`), which writes its port to the file READY once it listens.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import grpc

WARMUP = 8  # round trips discarded per size
HOT_ROUNDS = 300  # back-to-back echo rounds per size
ECHO_METHOD = "/bench.Echo/Echo"
RELAY_CHAIN = "/bench.Relay/Chain"
RELAY_RETURN = "/bench.Relay/Return"
GRPC_OPTIONS = [("grpc.max_receive_message_length", 1 << 28), ("grpc.max_send_message_length", 1 << 28)]


# -- servers (each in its own process) ----------------------------------------------------------------------


async def serve_echo(ready: Path) -> None:
    async def echo(request_iterator, context):
        async for message in request_iterator:
            yield message

    handlers = {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
    await _serve(grpc.method_handlers_generic_handler("bench.Echo", handlers), ready)


async def serve_relay(ready: Path, weights: int, downstream: str) -> None:
    returned: asyncio.Queue[bytes] = asyncio.Queue()
    channel = grpc.aio.insecure_channel(downstream, options=GRPC_OPTIONS) if downstream else None
    compute = _matrix_vector(weights) if weights else None

    async def chain(request_iterator, context):
        out = channel.stream_stream(RELAY_CHAIN)() if channel is not None else None
        async for message in request_iterator:
            if compute is not None:
                message = compute(message)
            if out is not None:
                await out.write(message)
            else:
                returned.put_nowait(message)
        if out is not None:
            await out.done_writing()
        return
        yield  # a generator: the CHAIN stream sends nothing back

    async def return_(request_iterator, context):
        while True:
            yield await returned.get()

    handlers = {
        "Chain": grpc.stream_stream_rpc_method_handler(chain),
        "Return": grpc.stream_stream_rpc_method_handler(return_),
    }
    await _serve(grpc.method_handlers_generic_handler("bench.Relay", handlers), ready)


def _matrix_vector(weights: int):
    """A per-message step that streams `weights` float32 values through the CPU, as a block does for
    one token, and adds its seconds to the payload's leading float64."""
    import torch

    torch.set_num_threads(1)
    width = 576  # SmolLM2-135M's hidden size; the weight bytes are what matter
    matrix = torch.randn(max(1, weights // width), width)
    vector = torch.randn(width)

    def step(message: bytes) -> bytes:
        start = time.perf_counter()
        torch.mv(matrix, vector)
        spent = time.perf_counter() - start
        out = bytearray(message)
        struct.pack_into("<d", out, 0, struct.unpack_from("<d", out)[0] + spent)
        return bytes(out)

    return step


async def _serve(handler, ready: Path) -> None:
    server = grpc.aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ready.write_text(str(port))
    await server.wait_for_termination()


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    with tempfile.TemporaryDirectory(prefix="grpc-reference-") as folder:
        ready = Path(folder) / "port"
        process = subprocess.Popen([sys.executable, __file__, *args[:1], str(ready), *args[1:]])
        while not ready.exists() or not ready.read_text():
            if process.poll() is not None:
                raise RuntimeError(f"the {args[0]} server exited")
            time.sleep(0.05)
        return process, f"127.0.0.1:{ready.read_text()}"


def start_echo() -> tuple[subprocess.Popen, str]:
    return _start("echo")


def start_relays(k: int, weights: int = 0) -> tuple[list[subprocess.Popen], str, str]:
    """K relay processes chained last to first: (processes, first address, last address). With
    `weights`, each streams that many float32 values through the CPU per message."""
    process, last = _start("relay", str(weights))
    processes, first = [process], last
    for _ in range(k - 1):
        process, first = _start("relay", str(weights), first)
        processes.append(process)
    return processes, first, last


# -- clients ----------------------------------------------------------------------------------------------


class Echo:
    """One open bidi stream per message size to the echo server; round trips recorded per size."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
        self.calls: dict[int, tuple[grpc.aio.StreamStreamCall, bytes]] = {}
        self.rtts: dict[int, list[float]] = defaultdict(list)

    async def round_trip(self, size: int) -> None:
        if size not in self.calls:
            self.calls[size] = (self.channel.stream_stream(ECHO_METHOD)(), os.urandom(size))
        call, payload = self.calls[size]
        start = time.perf_counter()
        await call.write(payload)
        await call.read()
        self.rtts[size].append(time.perf_counter() - start)

    def one_way_s(self) -> dict[int, float]:
        return {size: statistics.median(rtts[WARMUP:] or rtts) / 2 for size, rtts in self.rtts.items()}

    async def close(self) -> None:
        for call, _ in self.calls.values():
            await call.done_writing()
        await self.channel.close()


async def hot_echo(address: str, sizes: list[int]) -> dict[int, float]:
    """One-way seconds per size, round trips back to back."""
    echo = Echo(address)
    try:
        for size in sizes:
            for _ in range(HOT_ROUNDS + WARMUP):
                await echo.round_trip(size)
        return echo.one_way_s()
    finally:
        await echo.close()


async def relay_chain(
    first: str, last: str, echo_address: str, size: int, steps: int, idle_s: float
) -> tuple[float, float]:
    """(median seconds for `size` bytes through the relay chain and back, echo one-way seconds of `size`).

    Before each pass, one echo round trip (measured in the same moments) and `idle_s` of sleep: our
    stages compute that long per step, and a process woken after a pause answers slower. The seconds
    computing relays report in the payload are taken off each pass.
    """
    chain_channel = grpc.aio.insecure_channel(first, options=GRPC_OPTIONS)
    return_channel = grpc.aio.insecure_channel(last, options=GRPC_OPTIONS)
    chain = chain_channel.stream_stream(RELAY_CHAIN)()
    returned = return_channel.stream_stream(RELAY_RETURN)()
    echo = Echo(echo_address)
    payload, passes = bytes(8) + os.urandom(size - 8), []  # leading float64 0.0: no compute yet
    try:
        await returned.write(b"")  # opens the RETURN stream on the last relay
        for _ in range(steps + WARMUP):
            await echo.round_trip(size)
            await asyncio.sleep(idle_s)
            start = time.perf_counter()
            await chain.write(payload)
            reply = await returned.read()
            passes.append(time.perf_counter() - start - struct.unpack_from("<d", reply)[0])
        return statistics.median(passes[WARMUP:]), echo.one_way_s()[size]
    finally:
        chain.cancel()
        returned.cancel()
        await echo.close()
        await chain_channel.close()
        await return_channel.close()


if __name__ == "__main__":
    kind, ready_file, *rest = sys.argv[1:]
    if kind == "echo":
        asyncio.run(serve_echo(Path(ready_file)))
    else:
        weights, *downstream = rest
        asyncio.run(serve_relay(Path(ready_file), int(weights), downstream[0] if downstream else ""))
