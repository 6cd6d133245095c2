"""The stage runtime in-process on a tiny real checkpoint: loading, checks, and exact segment outputs."""

import hashlib

import pytest
import torch

from partition.errors import ModelNotFoundError
from partition.model import load_segment, resolve_model
from partition.runtime.errors import (
    CapacityError,
    InvalidRequestError,
    PositionError,
    StaleDeploymentError,
    UnknownSessionError,
)
from partition.runtime.stage import Deployment, StageRuntime, WorkerSettings
from partition.types import Segment
from tests.model.checkpoints import save_tiny_hf


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    save_tiny_hf("llama", root / "tiny")
    save_tiny_hf("llama-tied", root / "tiny-tied")
    return root


FIRST_HALF = Segment(0, 3)


def deployment(segment=FIRST_HALF, epoch=1, **overrides) -> Deployment:
    fields = dict(
        plan_id="plan",
        epoch=epoch,
        model="tiny",
        model_digest="",
        segment=segment,
        dtype="float32",
        downstream="",
        codec_out="raw",
        max_context=32,
        max_sessions=2,
    )
    return Deployment(**(fields | overrides))


@pytest.fixture
def runtime(models):
    return StageRuntime(WorkerSettings(name="w", models_dir=models, kv_budget_bytes=1 << 20))


def test_load_reports_digests_and_is_idempotent(runtime, models):
    first = runtime.load(deployment())
    assert first.deployment.model_digest == resolve_model(models / "tiny").digest
    assert first.weights_digest.startswith("sha256:") and first.kv_slots == 2 and first.n_blocks == 3
    again = runtime.load(deployment())
    assert again.load_s == 0.0 and again.weights_digest == first.weights_digest


def test_the_weights_digest_covers_every_unit_in_order_with_its_tensors_as_loaded(runtime, models):
    """sha256 over (unit name, sha256 over (tensor name, bytes) of the unit) for each unit: what the
    loader computes while it reads, a hash per unit on another thread, is that of what it loaded."""
    whole = runtime.load(deployment(Segment(0, 5)))
    expected = hashlib.sha256()
    for unit, module in runtime._loaded.model.units().items():
        tensors = hashlib.sha256()
        for name, tensor in module.state_dict().items():
            tensors.update(name.encode() + tensor.contiguous().view(torch.uint8).numpy().tobytes())
        expected.update(unit.encode() + tensors.digest())
    assert whole.weights_digest == "sha256:" + expected.hexdigest()
    assert runtime.load(deployment(Segment(1, 5), epoch=2)).weights_digest != whole.weights_digest


def test_a_wrong_model_digest_is_refused_before_loading(runtime):
    with pytest.raises(StaleDeploymentError, match="the plan expects sha256:beef"):
        runtime.load(deployment(), expected_digest="sha256:beef")
    assert runtime.deployment is None


def test_the_memory_budget_bounds_the_slots(runtime):
    # 2 blocks x 2 (k, v) x 2 kv heads x 16 dims x 4 bytes = 512 B per token; x 32 tokens = 16 KiB per slot
    with pytest.raises(CapacityError, match="over this worker's budget.*--kv-budget-mb"):
        runtime.load(deployment(max_sessions=100))
    assert runtime.load(deployment(max_sessions=0)).kv_slots == 8  # default, well within the budget


def step(runtime, session_id: str, position: int, x: torch.Tensor) -> torch.Tensor:
    """One step of every position of `x` as the transport runs it: checked, run, then the position moved."""
    n_tokens = x.shape[1]
    session = runtime.begin_step(session_id, "plan", 1, position, n_tokens)
    out = runtime.run_step(session, x, n_tokens, last_only=False)
    runtime.end_step(session, n_tokens)
    return out


def test_a_step_run_but_not_ended_leaves_the_session_where_it_was(runtime):
    """The transport ends a step once its output is encoded: one refused after it ran is sent again."""
    runtime.load(deployment(Segment(0, 3)))
    runtime.open_session("s", "plan", 1, runtime.deployment.model_digest)
    first = runtime.run_step(
        runtime.begin_step("s", "plan", 1, 0, 2), torch.tensor([[1, 2]]), 2, last_only=False
    )
    again = step(runtime, "s", 0, torch.tensor([[1, 2]]))
    assert torch.equal(first, again)
    with pytest.raises(PositionError, match="expected position 2, got 0"):
        runtime.begin_step("s", "plan", 1, 0, 2)


def test_a_new_session_finds_no_keys_of_the_sessions_its_slot_held_before(runtime):
    """Every position an earlier owner wrote is zero when the slot is handed out again, also those a
    step wrote that ran but was not ended (refused after it ran), and also after the slot changed
    hands twice."""
    runtime.load(deployment(Segment(1, 3), max_sessions=1))  # blocks only: one slot, reused each time
    cache = runtime._loaded.cache
    digest = runtime.deployment.model_digest

    def keys_written() -> int:
        return int((cache.k[:, 0].abs().sum(dim=(0, 1, 3)) != 0).sum())  # positions with a nonzero key

    runtime.open_session("long", "plan", 1, digest)
    step(runtime, "long", 0, torch.randn(1, 6, 64))
    unended = runtime.begin_step("long", "plan", 1, 6, 3)
    runtime.run_step(unended, torch.randn(1, 3, 64), 3, last_only=False)  # positions 6..8, never ended
    assert keys_written() == 9
    runtime.end_session("long", "plan", 1)
    for owner in ("short", "next"):
        runtime.open_session(owner, "plan", 1, digest)
        assert keys_written() == 0
        step(runtime, owner, 0, torch.randn(1, 2, 64))
        runtime.end_session(owner, "plan", 1)


def test_a_segment_without_blocks_holds_no_more_sessions_than_any_worker(runtime):
    with pytest.raises(CapacityError, match="4294967295 sessions asked for; a worker holds at most 1024"):
        runtime.load(deployment(Segment(0, 1), max_sessions=2**32 - 1))
    assert runtime.load(deployment(Segment(0, 1), max_sessions=1024)).kv_slots == 1024


def test_steps_match_the_segment_run_alone_and_positions_advance(runtime, models):
    runtime.load(deployment(Segment(0, 3)))
    session, new = runtime.open_session("s", "plan", 1, runtime.deployment.model_digest)
    assert new and session.next_position == 0
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    out = step(runtime, "s", 0, ids)
    reference = load_segment(resolve_model(models / "tiny"), Segment(0, 3))
    cache = reference.new_cache(1, 32)
    assert torch.equal(out, reference(ids, cache, [0], [0]))
    nxt = step(runtime, "s", 5, torch.tensor([[9]]))
    assert torch.equal(nxt, reference(torch.tensor([[9]]), cache, [0], [5]))
    with pytest.raises(PositionError, match="expected position 6, got 5"):
        runtime.begin_step("s", "plan", 1, 5, 1)


def test_stale_plan_epoch_and_model_are_refused(runtime):
    runtime.load(deployment(epoch=3))
    digest = runtime.deployment.model_digest
    with pytest.raises(StaleDeploymentError, match="epoch 2, but this worker serves plan 'plan' epoch 3"):
        runtime.open_session("s", "plan", 2, digest)
    with pytest.raises(StaleDeploymentError, match="plan 'other'"):
        runtime.open_session("s", "other", 3, digest)
    with pytest.raises(StaleDeploymentError, match="model digest sha256:0"):
        runtime.open_session("s", "plan", 3, "sha256:0")
    with pytest.raises(UnknownSessionError):
        runtime.begin_step("never-opened", "plan", 3, 0, 1)


def test_inputs_of_the_wrong_kind_or_range_are_invalid(runtime):
    runtime.load(deployment(Segment(0, 3)))
    runtime.open_session("s", "plan", 1, runtime.deployment.model_digest)
    session = runtime.begin_step("s", "plan", 1, 0, 2)
    with pytest.raises(InvalidRequestError, match=r"takes token ids \[1, 2\]"):
        runtime.run_step(session, torch.zeros(1, 2, 64), 2, last_only=False)
    with pytest.raises(InvalidRequestError, match=r"token ids must lie in \[0, 256\)"):
        runtime.run_step(session, torch.tensor([[1, 256]]), 2, last_only=False)
    assert session.next_position == 0  # failed steps do not advance
    runtime.load(deployment(Segment(3, 5)))
    runtime.open_session("t", "plan", 1, runtime.deployment.model_digest)
    with pytest.raises(InvalidRequestError, match=r"takes activations \[1, 1, 64\]"):
        runtime.run_step(runtime.begin_step("t", "plan", 1, 0, 1), torch.tensor([[1]]), 1, last_only=False)


def test_a_load_that_fails_leaves_the_deployment_and_its_sessions_serving(runtime, models):
    runtime.load(deployment())
    runtime.open_session("s", "plan", 1, runtime.deployment.model_digest)
    step(runtime, "s", 0, torch.tensor([[1, 2]]))
    broken = models / "broken"  # a config and no weights: found, then fails while loading
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text((models / "tiny" / "config.json").read_text())
    with pytest.raises(ModelNotFoundError, match="has no model.safetensors"):
        runtime.load(deployment(model="broken", epoch=2))
    assert runtime.deployment.epoch == 1
    assert step(runtime, "s", 2, torch.tensor([[3]])).shape[1] == 1  # the session goes on where it was


def test_redeploying_drops_sessions_and_reuses_same_weights(runtime):
    first = runtime.load(deployment(epoch=1))
    runtime.open_session("s", "plan", 1, runtime.deployment.model_digest)
    second = runtime.load(deployment(epoch=2))
    assert second.dropped_sessions == ("s",)
    assert second.weights_digest == first.weights_digest
    with pytest.raises(StaleDeploymentError):
        runtime.begin_step("s", "plan", 1, 0, 1)


def test_a_redeploy_that_moves_the_range_reads_only_the_units_it_did_not_hold(runtime, models):
    """A re-plan that widens or narrows a worker's range: the blocks it held are kept as they are, and
    the segment computes what a fresh load of it computes."""
    runtime.load(deployment(Segment(1, 3)))  # blocks 0 and 1
    held = runtime._loaded.model.units()
    wider = runtime.load(deployment(Segment(0, 4), epoch=2))  # the embedding, blocks 0 to 2
    units = runtime._loaded.model.units()
    assert wider.units_kept == 2 and [units[name] is held.get(name) for name in units] == [
        False,
        True,
        True,
        False,
    ]
    fresh = StageRuntime(runtime.settings).load(deployment(Segment(0, 4), epoch=2))
    assert wider.weights_digest == fresh.weights_digest and wider.weight_bytes == fresh.weight_bytes
    runtime.open_session("s", "plan", 2, runtime.deployment.model_digest)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    session = runtime.begin_step("s", "plan", 2, 0, 5)
    reference = load_segment(resolve_model(models / "tiny"), Segment(0, 4))
    assert torch.equal(
        runtime.run_step(session, ids, 5, last_only=False),
        reference(ids, reference.new_cache(1, 32), [0], [0]),
    )

    same = runtime.load(deployment(Segment(0, 4), epoch=2, dtype=""))  # the default's other spelling
    assert same.load_s == 0.0 and same.units_kept == 4
    narrower = runtime.load(deployment(Segment(2, 3), epoch=3))  # block 1 alone
    assert narrower.units_kept == 1 and runtime._loaded.model.blocks[0] is held["block.1"]
    other_dtype = runtime.load(deployment(Segment(2, 4), epoch=4, dtype="float16"))
    assert (
        other_dtype.units_kept == 0
        and runtime._loaded.model.blocks[0].attn_norm.weight.dtype == torch.float16
    )


def test_a_kept_embedding_reads_its_own_table_and_the_segment_served_before_is_left_as_it_was(
    runtime, models
):
    """Tied embeddings: the whole model's embedding reads the head's matrix, so a segment without the
    head loads its own; and one that gains the head ties a new embedding, not the one still serving."""
    tied = dict(model="tiny-tied")
    runtime.load(deployment(Segment(0, 5), **tied))  # the whole model: one matrix for both ends
    without_head = runtime.load(deployment(Segment(0, 2), epoch=2, **tied))
    assert without_head.units_kept == 1  # block 0; the embedding is read again
    fresh = StageRuntime(runtime.settings).load(deployment(Segment(0, 2), epoch=2, **tied))
    assert without_head.weights_digest == fresh.weights_digest
    assert runtime._loaded.model.embed.tokens is not None

    serving = runtime._loaded.model
    whole = runtime.load(deployment(Segment(0, 5), epoch=3, **tied))
    assert whole.units_kept == 1 and serving.embed.tokens is not None and serving.embed.table_DV is None
    assert runtime._loaded.model.embed.table_DV is not None  # the new one reads the new head's matrix
