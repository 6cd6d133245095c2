"""The worker's server: reflection for any gRPC client, health, and graceful shutdown on SIGTERM."""

import asyncio
from datetime import datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from partition.transport.channels import TransportConfig
from partition.transport.client import Chain
from tests.transport.helpers import PROMPT, WHOLE, deploy, new_session_id


def reflect(address, request):
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))


def test_reflection_lists_and_describes_the_stage_service(start_worker):
    worker = start_worker("reflective")
    listed = reflect(worker.address, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "partition.v1.Stage",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    described = reflect(
        worker.address, reflection_pb2.ServerReflectionRequest(file_containing_symbol="partition.v1.Stage")
    )
    files = described.file_descriptor_response.file_descriptor_proto
    assert files and any(b"partition/v1/stage.proto" in f for f in files)


def test_sigterm_drains_and_exits_cleanly_with_a_session_open(start_worker):
    import torch

    worker = start_worker("terminated", "--grace", str(GRACE_S))
    with grpc.insecure_channel(worker.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    digest = deploy([worker], [WHOLE])

    async def open_then_terminate():
        chain = Chain([worker.address], TransportConfig())
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        await session.step(torch.tensor([PROMPT]), 0)
        code = await asyncio.to_thread(worker.stop, 30.0)
        await session.close(end_session=False)
        await chain.close()
        return code

    assert asyncio.run(open_then_terminate()) == 0  # exited by itself after SIGTERM, not killed
    log = worker.log_text()
    drained, stopped = (
        _log_time(log, text) for text in ("signal received: draining", "worker terminated stopped")
    )
    assert 0 <= stopped - drained < GRACE_S + 1.0  # the open session's streams held it for the grace at most


GRACE_S = 2.0


def _log_time(log: str, text: str) -> float:
    """Seconds of the day at which the line containing `text` was logged."""
    line = next(line for line in log.splitlines() if text in line)
    clock = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return clock.hour * 3600 + clock.minute * 60 + clock.second + clock.microsecond / 1e6


def test_a_second_server_on_a_taken_port_is_refused():
    from partition.errors import ConfigError
    from partition.transport.server import GrpcServer

    async def scenario():
        first = GrpcServer([], [], TransportConfig())
        port = await first.start("127.0.0.1:0")
        try:
            with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}.*in use"):
                await GrpcServer([], [], TransportConfig()).start(f"127.0.0.1:{port}")
        finally:
            await first.stop(0)

    asyncio.run(scenario())
