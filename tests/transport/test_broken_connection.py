"""A worker killed while a stream to it is open: gRPC's asyncio client fails the next write as INTERNAL
("Internal error from Core"), not as a peer gone. call_status tells the two apart by the channel, so
that a request resumes after such a loss as after any other (coordinator/resume.py)."""

import asyncio
import os
import signal

import grpc

from partition.transport.channels import CORE_WRITE_FAILED, call_status
from partition.transport.generated import measure_pb2
from partition.transport.links import probe_method

PAYLOAD = measure_pb2.ProbeRequest(payload=bytes(1 << 20))  # large: the writes reach the broken socket
MAX_WRITES = 200


async def _write_until_it_fails(victim, survivor) -> tuple[grpc.aio.AioRpcError, str, str]:
    """Open a Probe stream to `victim`, kill it, write until a write fails: that error, and call_status
    of it on the victim's channel and on a channel to the `survivor`, which is still connected."""
    broken, live = grpc.aio.insecure_channel(victim.address), grpc.aio.insecure_channel(survivor.address)
    try:
        await asyncio.gather(broken.channel_ready(), live.channel_ready())
        call = probe_method(broken)()
        await call.write(measure_pb2.ProbeRequest())
        await call.read()  # the stream is up
        os.kill(victim.pid, signal.SIGKILL)
        victim.process.wait(timeout=30)
        for _ in range(MAX_WRITES):
            try:
                await call.write(PAYLOAD)
            except grpc.aio.AioRpcError as error:
                details = error.details()
                return (
                    error,
                    call_status(error.code(), details, broken),
                    call_status(error.code(), details, live),
                )
        raise AssertionError(f"{MAX_WRITES} MiB written to a killed worker without an error")
    finally:
        await asyncio.gather(broken.close(), live.close())


def test_a_write_to_a_killed_worker_reads_as_unavailable_not_as_internal(start_worker):
    victim, survivor = start_worker("victim"), start_worker("survivor")
    error, on_broken, on_live = asyncio.run(_write_until_it_fails(victim, survivor))
    # what gRPC says, the reason call_status exists: should gRPC say UNAVAILABLE itself one day, this
    # fails, and call_status can go
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, CORE_WRITE_FAILED)
    assert on_broken == (grpc.StatusCode.UNAVAILABLE, f"the connection broke mid-call ({CORE_WRITE_FAILED})")
    # the same status on a channel still connected: the peer ended the call, a real INTERNAL
    assert on_live == (grpc.StatusCode.INTERNAL, CORE_WRITE_FAILED)
