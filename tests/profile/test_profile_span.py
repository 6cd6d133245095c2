"""Blocks are timed as a run of several (profile): a block alone stays in the CPU cache between calls."""

from dataclasses import replace

import pytest

import partition.profile.profiler as profiler
from partition.errors import ConfigError
from partition.model import resolve_model
from partition.profile import ProfileSettings
from partition.types import Segment

SETTINGS = ProfileSettings(prefill_lengths=(4,), context_lengths=(4,), repeats=1, warmup=0)


@pytest.fixture
def loaded_segments(monkeypatch):
    loaded = []
    real = profiler.load_segment

    def recording(source, segment, **kwargs):
        loaded.append(segment)
        return real(source, segment, **kwargs)

    monkeypatch.setattr(profiler, "load_segment", recording)
    return loaded


def test_blocks_are_timed_together_and_costed_per_block(tiny_dirs, loaded_segments):
    source = resolve_model(tiny_dirs["llama"])
    n = source.spec.n_blocks
    assert n >= 2
    spanned = profiler.profile_model(source, replace(SETTINGS, block_span=2), threads=1)
    alone = profiler.profile_model(source, replace(SETTINGS, block_span=1), threads=1)
    assert Segment(1, 3) in loaded_segments and Segment(1, 2) in loaded_segments
    # per-block numbers: the bytes of one block, whatever the span
    assert spanned.block.weight_bytes == alone.block.weight_bytes
    assert spanned.block.kv_bytes_per_token == alone.block.kv_bytes_per_token
    assert spanned.block.decode.at(4) > 0


def test_the_span_never_exceeds_the_model(tiny_dirs, loaded_segments):
    source = resolve_model(tiny_dirs["llama"])
    n = source.spec.n_blocks
    profiler.profile_model(source, replace(SETTINGS, block_span=n + 5), threads=1)
    assert Segment(1, 1 + n) in loaded_segments


def test_the_span_is_shortened_to_the_bytes_it_may_hold(tiny_dirs, loaded_segments, monkeypatch):
    source = resolve_model(tiny_dirs["llama"])
    n = source.spec.n_blocks
    assert n >= 3
    one_block = sum(t.numel() for t in profiler.unit_state(source, 1).values()) * 4  # float32
    monkeypatch.setattr(profiler, "SPAN_BYTES", 2 * one_block + 1)
    profiled = profiler.profile_model(source, replace(SETTINGS, block_span=n), threads=1)
    assert Segment(1, 3) in loaded_segments and Segment(1, 1 + n) not in loaded_segments
    assert profiled.block.weight_bytes == one_block  # still per block
    monkeypatch.setattr(profiler, "SPAN_BYTES", one_block // 2)  # not even one: one all the same
    profiler.profile_model(source, replace(SETTINGS, block_span=n), threads=1)
    assert Segment(1, 2) in loaded_segments


def test_a_span_below_one_is_refused():
    with pytest.raises(ConfigError):
        replace(SETTINGS, block_span=0)


def test_the_head_is_timed_with_the_coordinators_work_for_each_token(tiny_dirs, monkeypatch):
    source = resolve_model(tiny_dirs["llama"])
    tails = []
    real = profiler.step_tail
    monkeypatch.setattr(
        profiler, "step_tail", lambda logits, io: tails.append(logits.shape) or real(logits, io)
    )
    settings = replace(SETTINGS, repeats=2, warmup=1)
    profiler.profile_model(source, settings, threads=1)
    points = len(settings.prefill_lengths) + len(settings.context_lengths)
    assert len(tails) == points * (settings.repeats + settings.warmup)  # the head's calls, and only those
    assert all(shape[:2] == (1, 1) and shape[-1] == source.spec.vocab_size for shape in tails)


def test_the_memory_a_device_offers_is_read_before_any_segment_is_loaded(tiny_dirs, monkeypatch):
    """What the profiler's own segments hold (357 MiB of MemAvailable after profiling SmolLM2 here) is
    not memory the device lacks when it serves."""
    events = []
    real_load, real_identify = profiler.load_segment, profiler.identify

    def load(source, segment, **kwargs):
        events.append("segment loaded")
        return real_load(source, segment, **kwargs)

    def identify(*args):
        events.append("memory read")
        return real_identify(*args)

    monkeypatch.setattr(profiler, "load_segment", load)
    monkeypatch.setattr(profiler, "identify", identify)
    profiler.profile_model(resolve_model(tiny_dirs["llama"]), SETTINGS, threads=1)
    assert events[0] == "memory read" and events.count("memory read") == 1 and "segment loaded" in events
