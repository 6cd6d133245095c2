"""The RETURN stream's contract (protos/partition/v1/forward.proto), with a bare gRPC client: a reader
that comes late still gets the session's results and end, a reader that writes is refused, and a
session opened again under a new pair_id is not disturbed by its old streams.

Real worker processes on 127.0.0.1; after each refusal, `serves` proves the worker is still up.
"""

import asyncio

import grpc
import pytest
import torch

from partition.transport.channels import TransportConfig
from partition.transport.client import StageClient
from partition.transport.generated import deploy_pb2, forward_pb2
from partition.transport.links import StatusError
from partition.transport.routes import End, ReturnRoutes
from partition.transport.tensors import from_proto, to_proto
from tests.transport.helpers import PROMPT, WHOLE, deploy, new_session_id, reference_tokens, serves

FORWARD = "/partition.v1.Stage/Forward"


@pytest.fixture(scope="module")
def solo(chain_workers):
    return chain_workers[:1]


def opening(ref: forward_pb2.SessionRef, role: int, pair_id: str = "") -> bytes:
    open_stream = forward_pb2.OpenStream(session=ref, role=role, pair_id=pair_id)
    return forward_pb2.ForwardRequest(open=open_stream).SerializeToString()


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


def token_step(ref: forward_pb2.SessionRef, position: int) -> bytes:
    step = forward_pb2.Step(
        session_id=ref.session_id,
        plan_id=ref.plan_id,
        epoch=ref.epoch,
        position=position,
        n_tokens=1,
        tensor=to_proto(torch.tensor([[PROMPT[0]]])),
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


def test_new_streams_of_a_session_get_only_their_chains_results_not_one_left_unread(solo):
    """The KV cache outlives the streams: a caller that left a result unread opens new streams on the
    same session, under a new pair_id as forward.proto asks, and goes on from next_position; its new
    RETURN stream carries only the new CHAIN stream's result. The old CHAIN stream here half-closes:
    a stage cannot tell that from a cancellation (gRPC's read gives EOF for both, and the handler's
    cancellation may come later or never reach it), so the pair_id is what keeps the result apart."""
    digest = deploy(solo, [WHOLE])
    ref = forward_pb2.SessionRef(session_id=new_session_id(), plan_id="plan", epoch=1, model_digest=digest)
    left = replies(solo[0].address, [opening(ref, forward_pb2.STREAM_ROLE_CHAIN, "first"), prompt_step(ref)])
    assert [reply.WhichOneof("kind") for reply in left] == ["opened"]  # computed; its result waits unread

    with grpc.insecure_channel(solo[0].address) as channel:
        forward = channel.stream_stream(FORWARD, response_deserializer=forward_pb2.ForwardReply.FromString)
        results = forward(iter([opening(ref, forward_pb2.STREAM_ROLE_RETURN, "second")]), timeout=10)
        assert next(results).WhichOneof("kind") == "opened"
        chain = forward(
            iter([opening(ref, forward_pb2.STREAM_ROLE_CHAIN, "second"), token_step(ref, len(PROMPT))]),
            timeout=10,
        )
        (opened,) = [reply.opened for reply in chain]
        (result,) = [reply.result for reply in results]
    assert opened.next_position == len(PROMPT)
    assert result.position == len(PROMPT)


def test_a_cancelled_chain_streams_unread_results_are_dropped_unless_a_reader_is_attached():
    """A CHAIN stream whose cancellation reaches its handler: no reader will come for its results, so
    they go at once instead of waiting for the session's end; a reader already attached gets them,
    then the cancellation."""
    routes = ReturnRoutes()
    routes.put("s", "gone", b"unread")
    routes.finish("s", "gone", NOT_OPEN, abandoned=True)
    assert routes.attach("s", "gone").empty()

    reading = routes.attach("s", "read")
    routes.put("s", "read", b"result")
    routes.finish("s", "read", NOT_OPEN, abandoned=True)
    assert reading.get_nowait() == b"result" and reading.get_nowait() == End(NOT_OPEN)


NOT_OPEN = StatusError(grpc.StatusCode.NOT_FOUND, "the session is not open here")


def test_results_computed_after_their_session_ended_are_swept():
    routes = ReturnRoutes()
    routes.drop("ended")  # EndSession reached the last stage first,
    routes.put("ended", "p", b"late")  # then a step of the session still under way
    routes.put("open", "p", b"result")
    routes.sweep(open_sessions={"open"}, unopened_after_s=60.0, unopened=NOT_OPEN)
    assert routes.attach("ended", "p").empty()
    waiting = routes.attach("open", "p")
    assert waiting.get_nowait() == b"result" and waiting.empty()
    routes.finish("open", "p")
    assert waiting.get_nowait() == End()


def test_an_old_chain_stream_ending_after_the_session_was_opened_again_leaves_the_new_pair_alone(solo):
    """A caller opening a session's streams again (resume, re-plan) cancels the old ones, and that
    cancellation may reach the last stage after the new streams opened: with a new pair_id, the new
    RETURN stream neither ends with it nor misses the new CHAIN stream's results."""
    digest = deploy(solo, [WHOLE])
    ref = forward_pb2.SessionRef(session_id=new_session_id(), plan_id="plan", epoch=1, model_digest=digest)

    async def reopen_before_the_old_chain_ends() -> forward_pb2.ForwardReply:
        async with grpc.aio.insecure_channel(solo[0].address) as channel:

            async def opened(role: int, pair_id: str) -> grpc.aio.StreamStreamCall:
                call = channel.stream_stream(
                    FORWARD, response_deserializer=forward_pb2.ForwardReply.FromString
                )()
                await call.write(opening(ref, role, pair_id))
                assert (await call.read()).WhichOneof("kind") == "opened"
                return call

            old_chain = await opened(forward_pb2.STREAM_ROLE_CHAIN, "old")
            new_return = await opened(forward_pb2.STREAM_ROLE_RETURN, "new")
            new_chain = await opened(forward_pb2.STREAM_ROLE_CHAIN, "new")
            old_chain.cancel()
            await asyncio.sleep(0.5)  # the worker hears of it, the new streams open
            await new_chain.write(prompt_step(ref))
            return await asyncio.wait_for(new_return.read(), timeout=10)

    reply = asyncio.run(reopen_before_the_old_chain_ends())
    assert reply.WhichOneof("kind") == "result" and reply.result.position == 0
    assert serves(solo, digest)


def test_a_pair_id_longer_than_64_characters_is_refused_and_the_worker_serves_on(solo):
    digest = deploy(solo, [WHOLE])
    ref = forward_pb2.SessionRef(session_id=new_session_id(), plan_id="plan", epoch=1, model_digest=digest)
    with pytest.raises(grpc.RpcError) as caught:
        replies(solo[0].address, [opening(ref, forward_pb2.STREAM_ROLE_CHAIN, "x" * 65)])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pair_id must have at most 64 characters" in caught.value.details()
    assert serves(solo, digest)


def test_a_return_stream_opened_after_its_chain_failed_unanswered_gets_the_failure(solo):
    """The CHAIN stream's end waits for a late reader even when it brought no results."""
    digest = deploy(solo, [WHOLE])
    ref = forward_pb2.SessionRef(session_id=new_session_id(), plan_id="plan", epoch=1, model_digest=digest)
    with pytest.raises(grpc.RpcError) as chain:
        replies(solo[0].address, [opening(ref, forward_pb2.STREAM_ROLE_CHAIN), token_step(ref, 5)])
    assert chain.value.code() == grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(grpc.RpcError) as late:
        replies(solo[0].address, [opening(ref, forward_pb2.STREAM_ROLE_RETURN)])
    assert late.value.code() == grpc.StatusCode.OUT_OF_RANGE and "position" in late.value.details()
    assert serves(solo, digest)


def test_a_return_stream_of_a_session_never_opened_ends_not_found_after_the_idle_timeout(start_worker):
    # Longer than a busy host may stall between two steps of `serves` below (0.5 s was not).
    worker = start_worker("forgetful", "--idle-timeout", "2")
    digest = deploy([worker], [WHOLE])
    ref = forward_pb2.SessionRef(session_id=new_session_id(), plan_id="plan", epoch=1, model_digest=digest)
    with pytest.raises(grpc.RpcError) as ghost:
        replies(worker.address, [opening(ref, forward_pb2.STREAM_ROLE_RETURN)])
    assert ghost.value.code() == grpc.StatusCode.NOT_FOUND and "not open here" in ghost.value.details()
    assert serves([worker], digest)


def test_only_readers_of_sessions_unopened_for_the_grace_are_ended():
    routes = ReturnRoutes()
    ghost, waiting = routes.attach("ghost", "p"), routes.attach("opening", "p")
    routes.sweep(open_sessions={"opening"}, unopened_after_s=0.0, unopened=NOT_OPEN)
    assert ghost.get_nowait() == End(NOT_OPEN) and waiting.empty()
    routes.sweep(open_sessions=set(), unopened_after_s=3600.0, unopened=NOT_OPEN)
    assert waiting.empty()  # its CHAIN stream may still be opening the session


def test_a_chain_whose_downstream_leads_back_to_its_worker_is_refused_at_once(start_worker):
    worker = start_worker("looped")

    async def load_with_itself_downstream() -> str:
        client = StageClient(worker.address, TransportConfig())
        try:
            request = deploy_pb2.LoadSegmentRequest(
                plan_id="plan", epoch=1, model="tiny", start=WHOLE.start, end=WHOLE.end,
                downstream=worker.address, codec_out="raw",
            )  # fmt: skip
            return (await client.load_segment(request)).model_digest
        finally:
            await client.close()

    digest = asyncio.run(load_with_itself_downstream())
    ref = forward_pb2.SessionRef(session_id=new_session_id(), plan_id="plan", epoch=1, model_digest=digest)
    with pytest.raises(grpc.RpcError) as looped:
        replies(worker.address, [opening(ref, forward_pb2.STREAM_ROLE_CHAIN, "p")])
    assert looped.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "addresses lead back to this worker" in looped.value.details()
    assert serves([worker], deploy([worker], [WHOLE]))
