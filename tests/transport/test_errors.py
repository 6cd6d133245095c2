"""Every refusal has its precise status and message, and the workers keep serving other sessions.

Real worker processes on 127.0.0.1. After each refused request, `serves` runs a fresh session
through the same chain to prove the workers are still up and correct.
"""

import asyncio
import time

import grpc
import pytest
import torch

from partition.transport.channels import TransportConfig
from partition.transport.client import Chain, StageCallError, StageClient
from partition.transport.generated import deploy_pb2, forward_pb2, measure_pb2, tensor_pb2
from partition.types import Segment
from tests.transport.helpers import PROMPT, SEGMENTS, WHOLE, deploy, new_session_id, serves


@pytest.fixture(scope="module")
def pair(chain_workers):
    return chain_workers[:2]


@pytest.fixture
def digest(pair):
    return deploy(pair, SEGMENTS)


def run_chain(workers, body):
    async def run():
        chain = Chain([w.address for w in workers], TransportConfig())
        try:
            return await body(chain)
        finally:
            await chain.close()

    return asyncio.run(run())


def refused(workers, body) -> StageCallError:
    with pytest.raises(StageCallError) as caught:
        run_chain(workers, body)
    return caught.value


def test_stale_epoch_is_refused_at_open(pair, digest):
    error = refused(pair, lambda chain: chain.open_session(new_session_id(), "plan", 2, digest))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "epoch 2, but this worker serves plan 'plan' epoch 1" in error.details
    assert serves(pair, digest)


def test_a_later_stage_refusal_reaches_the_coordinator_with_its_code(pair):
    digest = deploy(pair, SEGMENTS, max_sessions=1)
    deploy(pair[1:], SEGMENTS[1:], epoch=2)  # stage b moved on, stage a did not
    for _ in range(2):  # stage a frees the refused session's only KV slot at once
        error = refused(pair, lambda chain: chain.open_session(new_session_id(), "plan", 1, digest))
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details.startswith("[b] ") and "epoch 2" in error.details
    deploy(pair[1:], SEGMENTS[1:])
    assert serves(pair, digest)


def test_wrong_model_digest_is_refused_at_load_and_open(pair, digest):
    async def load(chain):
        return await chain.load(
            "plan", 1, "tiny", SEGMENTS, ["raw", "raw"], model_digest="sha256:" + "0" * 64
        )

    error = refused(pair, load)
    assert (
        error.code == grpc.StatusCode.FAILED_PRECONDITION and "the plan expects sha256:000" in error.details
    )
    deploy(pair, SEGMENTS)
    error = refused(pair, lambda chain: chain.open_session(new_session_id(), "plan", 1, "sha256:other"))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION and "model digest sha256:other" in error.details
    assert serves(pair, digest)


def test_out_of_order_position_names_expected_and_received(pair, digest):
    async def body(chain):
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            await session.step(torch.tensor([PROMPT]), 0)
            await session.step(torch.tensor([[1]]), len(PROMPT) + 3)
        finally:
            await session.close()

    error = refused(pair, body)
    assert error.code == grpc.StatusCode.OUT_OF_RANGE
    assert f"expected position {len(PROMPT)}, got {len(PROMPT) + 3}" in error.details
    assert serves(pair, digest)


def test_missing_fields_are_invalid_argument(pair, digest):
    async def step_without_tensor(chain):
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            await session._chain_call.write(
                forward_pb2.ForwardRequest(
                    step=forward_pb2.Step(
                        session_id=session.ref.session_id, plan_id="plan", epoch=1, n_tokens=1
                    )
                )
            )
            await session.receive()
        finally:
            await session.close()

    error = refused(pair, step_without_tensor)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "tensor is missing" in error.details

    async def load_without_plan(chain):
        return await chain.stages[0].load_segment(deploy_pb2.LoadSegmentRequest(model="tiny", start=0, end=2))

    error = refused(pair, load_without_plan)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "plan_id is empty" in error.details

    async def open_without_session_id(chain):
        return await chain.open_session("", "plan", 1, digest)

    error = refused(pair, open_without_session_id)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "session_id" in error.details
    assert serves(pair, digest)


def test_top_k_logits_of_every_position_are_refused_before_the_step_runs(pair, digest):
    async def body(chain):
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            await session.step(torch.tensor([PROMPT]), 0, last_only=False, logits_top_k=4)
        finally:
            await session.close()

    error = refused(pair, body)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "logits_top_k=4 applies to the last position only" in error.details
    assert serves(pair, digest)

    async def top_k_then_the_next_position(chain):  # a valid top-k step, and its position advanced
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            first = await session.step(torch.tensor([PROMPT]), 0, logits_top_k=4)
            second = await session.step(torch.tensor([[7]]), len(PROMPT), logits_top_k=4)
            return first, second
        finally:
            await session.close()

    for result in run_chain(pair, top_k_then_the_next_position):
        kept = torch.isfinite(result.output).sum().item()
        assert result.codec_received == "top-k" and result.bytes_received == 8 * kept and kept >= 4


@pytest.mark.parametrize(
    ("last_only", "score_next", "score_top", "log_probs", "said"),
    [
        (True, PROMPT[1:] + [0], 1, False, "one token id per position"),  # the last position alone
        (
            False,
            PROMPT[1:],
            1,
            False,
            f"one token id per position ({len(PROMPT)} here, got {len(PROMPT) - 1})",
        ),
        (False, PROMPT[1:] + [10**6], 1, False, "score_next ids must lie in [0, "),
        (False, PROMPT[1:] + [0], 21, False, "score_top in [0, 20]"),
        (False, PROMPT[1:] + [0], 1, True, "send it without logits_top_k and log_probs"),
    ],
    ids=["last-only", "too-few", "outside-vocabulary", "too-many-alternatives", "with-log-probs"],
)
def test_scores_asked_wrongly_are_refused_before_the_step_runs(
    pair, digest, last_only, score_next, score_top, log_probs, said
):
    async def body(chain):
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            ids = torch.tensor([PROMPT])
            await session.step(
                ids, 0, last_only=last_only, log_probs=log_probs, score_next=score_next, score_top=score_top
            )
        finally:
            await session.close()

    error = refused(pair, body)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and said in error.details
    assert serves(pair, digest)

    async def scored(chain):  # asked rightly, on the same workers: one row of 1 + 2 x 3 values each
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            return await session.step(
                torch.tensor([PROMPT]), 0, last_only=False, score_next=PROMPT[1:] + [0], score_top=3
            )
        finally:
            await session.close()

    result = run_chain(pair, scored)
    assert result.output.shape == (1, len(PROMPT), 7) and result.codec_received == "raw"
    assert result.output[0, :, 1::2].tolist() == result.output[0, :, 1::2].round().tolist()  # ids, as floats


def test_a_refused_prefill_chunk_is_reported_as_refused_while_the_next_chunks_are_on_their_way(pair, digest):
    """The coordinator sends prefill chunks before it reads: a call ended while they are in flight must
    still carry the refusal's status, not the client core's INTERNAL."""

    async def body(chain):
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            await session.send(torch.tensor([[1, 2, 3, 999]]), 0)  # 999: past the tiny model's 256 ids
            for chunk in range(1, 9):
                await session.send(torch.tensor([[1, 2, 3, 4]]), 4 * chunk)
            await session.receive()
        finally:
            await session.close()

    error = refused(pair, body)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert "token ids must lie in [0, 256), got 1..999" in error.details
    assert serves(pair, digest)


def solo_step(session, position: int, tensor) -> forward_pb2.ForwardRequest:
    """A step of one token as a client may send it, with any tensor."""
    step = forward_pb2.Step(
        session_id=session.ref.session_id,
        plan_id="solo",
        epoch=1,
        position=position,
        n_tokens=1,
        tensor=tensor,
    )
    return forward_pb2.ForwardRequest(step=step)


def test_a_tensor_larger_than_its_n_tokens_says_is_refused_before_it_is_decoded(pair, digest):
    """A few bytes that declare a GiB of activations (a zstd frame would inflate to it) are refused from
    the header, and the worker serves on."""
    solo = pair[1:]  # the stage that takes activations, as the chain's first
    solo_digest = deploy(solo, SEGMENTS[1:], codecs=["shuffle-zstd"], plan_id="solo")
    declared = [1, 1 << 20, 256]

    async def body(chain):
        session = await chain.open_session(new_session_id(), "solo", 1, solo_digest)
        try:
            tensor = tensor_pb2.Tensor(
                shape=declared, dtype=tensor_pb2.DTYPE_FLOAT32, codec="shuffle-zstd", data=b"not decoded"
            )
            await session._chain_call.write(solo_step(session, 0, tensor))
            await session.receive()
        finally:
            await session.close()

    error = refused(solo, body)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        f"a step of n_tokens=1 brings 64 values to this stage, but its tensor declares shape {declared}"
        in (error.details)
    )
    assert serves(pair, deploy(pair, SEGMENTS))


def test_a_step_whose_output_cannot_be_encoded_leaves_its_session_where_it_was(pair, digest):
    """fp16 holds no value of 1e6, which blocks pass on through their residual: the step is refused
    after it ran, and the session takes the same position again."""
    solo = pair[1:]
    solo_digest = deploy(solo, [Segment(1, 3)], codecs=["fp16"], plan_id="solo")

    async def body(chain):
        session = await chain.open_session(new_session_id(), "solo", 1, solo_digest)
        try:
            with pytest.raises(StageCallError) as too_large:
                await session.step(torch.full((1, 1, 64), 1e6), 0)
            await session.close(end_session=False)  # the KV cache outlives the streams: the same session
            session = await chain.open_session(session.ref.session_id, "solo", 1, solo_digest)
            again = await session.step(torch.full((1, 1, 64), 0.5), 0)
            return too_large.value, again
        finally:
            await session.close()

    error, again = run_chain(solo, body)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION and "exceeds the fp16 range" in error.details
    assert again.output.shape == (1, 1, 64) and torch.isfinite(again.output).all()
    assert serves(pair, deploy(pair, SEGMENTS))


def test_model_path_outside_the_models_dir_is_permission_denied(pair, digest, tmp_path, models_dir):
    for model in ("../../../etc", "/etc/passwd", str(tmp_path)):

        async def load(chain, model=model):
            request = deploy_pb2.LoadSegmentRequest(plan_id="plan", epoch=1, model=model, start=0, end=2)
            return await chain.stages[0].load_segment(request)

        error = refused(pair, load)
        assert error.code == grpc.StatusCode.PERMISSION_DENIED, model
        assert "outside the worker's --models-dir" in error.details
        assert str(models_dir.resolve()) not in error.details  # the worker's disk layout stays its own
    assert serves(pair, digest)  # the refused loads did not replace the deployment


def test_a_model_that_fails_to_load_is_named_without_the_workers_paths_and_the_old_one_serves_on(
    pair, digest, models_dir
):
    broken = models_dir / "broken"  # a config and no weights: allowed, found, then fails while loading
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text((models_dir / "tiny" / "config.json").read_text())

    async def load(chain):
        request = deploy_pb2.LoadSegmentRequest(plan_id="plan", epoch=2, model="broken", start=0, end=2)
        return await chain.stages[0].load_segment(request)

    error = refused(pair, load)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "<--models-dir>/broken has no model.safetensors" in error.details
    assert str(models_dir.resolve()) not in error.details
    assert serves(pair, digest)  # epoch 1 is still deployed, on both workers


def test_no_free_kv_slot_is_resource_exhausted(pair):
    digest = deploy(pair, SEGMENTS, max_sessions=1)

    async def two_sessions(chain):
        first = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            await chain.open_session(new_session_id(), "plan", 1, digest)
        finally:
            await first.close()

    error = refused(pair, two_sessions)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "EndSession" in error.details
    assert serves(pair, digest)  # the first session's close freed its slot


def test_profile_of_a_model_the_worker_cannot_read_is_refused_and_it_serves_on(pair, digest, models_dir):
    missing = measure_pb2.ProfileRequest(model="no-such-model")  # read inside --models-dir: not there
    error = refused(pair, lambda chain: chain.stages[0].profile(missing))
    assert error.code == grpc.StatusCode.NOT_FOUND and "no-such-model" in error.details
    assert str(models_dir.resolve()) not in error.details
    error = refused(
        pair, lambda chain: chain.stages[0].profile(measure_pb2.ProfileRequest(model="/etc/passwd"))
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert serves(pair, digest)


def test_idle_sessions_expire(start_worker):
    # Longer than a busy host may stall between two steps of `serves` below (0.3 s was not).
    worker = start_worker("expiring", "--idle-timeout", "2")
    digest = deploy([worker], [WHOLE])

    async def idle_then_step(chain):
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            await session.step(torch.tensor([PROMPT]), 0)
            expired, deadline = f"session {session.ref.session_id} expired", time.monotonic() + 60
            while expired not in worker.log_text():  # its sweep has run, however late
                assert time.monotonic() < deadline, "the idle session did not expire"
                await asyncio.sleep(0.1)
            await session.step(torch.tensor([[1]]), len(PROMPT))
        finally:
            await session.close(end_session=False)

    error = refused([worker], idle_then_step)
    assert error.code == grpc.StatusCode.NOT_FOUND and "expired" in error.details
    assert serves([worker], digest)


GARBAGE = [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f"]  # an invalid tag; a length past the end


@pytest.mark.parametrize("garbage", GARBAGE)
@pytest.mark.parametrize("method", ["LoadSegment", "EndSession", "Profile"])
def test_garbage_on_unary_rpcs_is_invalid_argument(pair, digest, method, garbage):
    with grpc.insecure_channel(pair[0].address) as channel:
        call = channel.unary_unary(f"/partition.v1.Stage/{method}")  # no serializers: raw bytes
        with pytest.raises(grpc.RpcError) as caught:
            call(garbage, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid partition.v1." in caught.value.details()
    assert serves(pair, digest)


@pytest.mark.parametrize("garbage", GARBAGE)
@pytest.mark.parametrize("method", ["Forward", "Probe"])
def test_garbage_on_streaming_rpcs_is_invalid_argument(pair, digest, method, garbage):
    with grpc.insecure_channel(pair[0].address) as channel:
        call = channel.stream_stream(f"/partition.v1.Stage/{method}")
        with pytest.raises(grpc.RpcError) as caught:
            list(call(iter([garbage]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert serves(pair, digest)


def test_garbage_after_a_valid_open_is_invalid_argument(pair, digest):
    ref = forward_pb2.SessionRef(session_id=new_session_id(), plan_id="plan", epoch=1, model_digest=digest)
    opening = forward_pb2.ForwardRequest(
        open=forward_pb2.OpenStream(session=ref, role=forward_pb2.STREAM_ROLE_CHAIN)
    )
    with grpc.insecure_channel(pair[0].address) as channel:
        call = channel.stream_stream("/partition.v1.Stage/Forward")
        with pytest.raises(grpc.RpcError) as caught:
            list(call(iter([opening.SerializeToString(), GARBAGE[0]]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert serves(pair, digest)


def test_probe_measures_round_trips_and_worker_to_worker_links(pair, digest):
    async def probes(chain):
        direct = await chain.stages[0].probe(rounds=5, payload_bytes=1000, reply_bytes=100)
        linked = await chain.stages[0].probe_link(pair[1].address, rounds=4, payload_bytes=2000)
        return direct, linked

    started = time.time_ns()
    direct, linked = run_chain(pair, probes)
    assert len(direct) == 5 and len(linked) == 4
    for s in direct + linked:
        assert started <= s.t0 <= s.t3 and s.t1 <= s.t2  # same host: one clock
        assert (s.t3 - s.t0) >= (s.t2 - s.t1)
    assert direct[0].request_bytes > 1000 and direct[0].reply_bytes > 100
    assert linked[0].request_bytes > 2000
    assert serves(pair, digest)


def test_end_session_is_idempotent(pair, digest):
    async def body(chain):
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        await session.step(torch.tensor([PROMPT]), 0)
        await session.close(end_session=False)
        first = await chain.stages[0].end_session(session.ref)
        second = await chain.stages[0].end_session(session.ref)
        return first, second

    first, second = run_chain(pair, body)
    assert first.found and first.positions == len(PROMPT)
    assert not second.found
    assert serves(pair, digest)


def test_stage_client_reports_unreachable_workers():
    async def body():
        client = StageClient("127.0.0.1:1", TransportConfig())
        try:
            await client.end_session(
                forward_pb2.SessionRef(session_id="s", plan_id="p", epoch=1), timeout_s=2
            )
        finally:
            await client.close()

    with pytest.raises(StageCallError) as caught:
        asyncio.run(body())
    assert caught.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_a_step_for_a_session_ended_meanwhile_is_not_found_on_the_chain_stream(pair, digest):
    async def end_then_step(chain):
        session = await chain.open_session(new_session_id(), "plan", 1, digest)
        try:
            await session.step(torch.tensor([PROMPT]), 0)
            await chain.stages[0].end_session(session.ref)  # the first stage forgets it, the stream stays
            await session.step(torch.tensor([[1]]), len(PROMPT))
        finally:
            await session.close(end_session=False)

    error = refused(pair, end_then_step)
    assert error.code == grpc.StatusCode.NOT_FOUND and "is not open here" in error.details
    assert serves(pair, digest)


def test_a_model_name_holding_a_nul_character_is_invalid_argument(pair, digest):
    async def load(chain):
        request = deploy_pb2.LoadSegmentRequest(plan_id="plan", epoch=1, model="tiny\x00x", start=0, end=2)
        return await chain.stages[0].load_segment(request)

    error = refused(pair, load)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "NUL character" in error.details
    assert serves(pair, digest)
