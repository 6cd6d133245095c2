"""The RETURN stream's contract (protos/partition/v1/forward.proto), with a bare gRPC client: a reader
that comes late still gets the session's results and end, and a reader that writes is refused.

Real worker processes on 127.0.0.1; after each refusal, `serves` proves the worker is still up.
"""

import grpc
import pytest
import torch

from partition.transport.generated import forward_pb2
from partition.transport.routes import End, ReturnRoutes
from partition.transport.tensors import from_proto, to_proto
from tests.transport.helpers import PROMPT, WHOLE, deploy, new_session_id, reference_tokens, serves

FORWARD = "/partition.v1.Stage/Forward"


@pytest.fixture(scope="module")
def solo(chain_workers):
    return chain_workers[:1]


def opening(ref: forward_pb2.SessionRef, role: int) -> bytes:
    return forward_pb2.ForwardRequest(open=forward_pb2.OpenStream(session=ref, role=role)).SerializeToString()


def prompt_step(ref: forward_pb2.SessionRef) -> bytes:
    step = forward_pb2.Step(
        session_id=ref.session_id,
        plan_id=ref.plan_id,
        epoch=ref.epoch,
        position=0,
        n_tokens=len(PROMPT),
        tensor=to_proto(torch.tensor([PROMPT])),
        output=forward_pb2.OUTPUT_SELECT_LAST,
    )
    return forward_pb2.ForwardRequest(step=step).SerializeToString()


def replies(address: str, requests: list[bytes]) -> list[forward_pb2.ForwardReply]:
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(FORWARD, response_deserializer=forward_pb2.ForwardReply.FromString)
        return list(call(iter(requests), timeout=10))


def test_a_return_stream_opened_after_its_chain_ended_gets_the_result_and_the_end(solo, models_dir):
    digest = deploy(solo, [WHOLE])
    ref = forward_pb2.SessionRef(session_id=new_session_id(), plan_id="plan", epoch=1, model_digest=digest)
    chain = replies(solo[0].address, [opening(ref, forward_pb2.STREAM_ROLE_CHAIN), prompt_step(ref)])
    assert [reply.WhichOneof("kind") for reply in chain] == ["opened"]  # ended OK: the step was computed

    late = replies(solo[0].address, [opening(ref, forward_pb2.STREAM_ROLE_RETURN)])
    assert [reply.WhichOneof("kind") for reply in late] == ["opened", "result"]
    logits = from_proto(late[1].result.tensor)
    assert int(logits[0, -1].argmax()) == reference_tokens(models_dir, PROMPT, 1)[0]


def test_a_message_on_a_return_stream_is_refused_and_the_worker_serves_on(solo):
    digest = deploy(solo, [WHOLE])
    ref = forward_pb2.SessionRef(session_id=new_session_id(), plan_id="plan", epoch=1, model_digest=digest)
    with pytest.raises(grpc.RpcError) as caught:
        replies(solo[0].address, [opening(ref, forward_pb2.STREAM_ROLE_RETURN), prompt_step(ref)])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "a RETURN stream carries only its OpenStream" in caught.value.details()
    assert serves(solo, digest)


def test_results_of_a_session_that_ended_are_forgotten_by_the_sweep():
    routes = ReturnRoutes()
    routes.drop("ended")  # EndSession reached the last stage first,
    routes.finish("ended")  # then the end of its CHAIN stream
    routes.put("open", b"result")
    routes.sweep(open_sessions={"open"})
    assert routes.attach("ended").empty()
    waiting = routes.attach("open")
    assert waiting.get_nowait() == b"result" and waiting.empty()
    routes.finish("open")
    assert waiting.get_nowait() == End()
