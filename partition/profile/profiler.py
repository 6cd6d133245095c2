"""Per-unit costs of a model on this device (profile): the numbers the planner works from.

For each unit kind (embed, block, head) a one-unit segment is loaded the way a worker loads it, then
timed the way the runtime calls it: prefill of P tokens from position 0 at several P (the head on the
last position only, as the coordinator samples), and one decode step at several context lengths; each
sample after an idle pause, as a stage waits for the rest of the chain between tokens, the points'
samples taken in turn so that a moment of a busy host does not bend one point alone. The head's time
includes the coordinator's own work for each token (`step_tail`), which runs right after it on the edge.
Medians are fitted (prefill quadratic in P, decode linear in the context); spreads are recorded.
All blocks have one shape, so a run of the first `block_span` blocks (all of them, unless their weights
pass SPAN_BYTES), timed together, stands for all of them: a block timed alone keeps its weights in the
CPU cache from one call to the next, which the blocks of a served segment, each read once per token, do
not; and a call after an idle pause pays a wake-up once, which a short run spreads over too few blocks.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from partition.errors import ConfigError
from partition.model import ModelSource, load_segment
from partition.model.layers import stores_transposed
from partition.model.weight_map import unit_state
from partition.profile.device import identify
from partition.profile.fit import fit_times
from partition.profile.timing import time_calls
from partition.types import (
    RAW_VALUE_BYTES,
    RETURN_TOP_K,
    TOP_K_LOGITS_BYTES,
    DeviceProfile,
    LayerCost,
    ModelRef,
    Segment,
)

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# How the profiler takes its samples; part of the cache key, so that a change that makes older timings
# incomparable measures again instead of serving them. 2: every point's samples taken in turn; 3: the
# top-K logits' encode and decode measured too; 4: tied_weight_bytes recorded; 5: blocks timed as a
# run of up to 32 (was 8).
METHOD = 5

# Most bytes of block weights the profiler loads at once to time them together: the run of blocks
# is shortened to fit, so that profiling a large model does not need the memory of serving it whole.
SPAN_BYTES = 1 << 30


@dataclass(frozen=True)
class ProfileSettings:
    """What a profile measures; part of its cache key."""

    prefill_lengths: tuple[int, ...] = (16, 64, 128, 256)  # prompt lengths timed, tokens
    context_lengths: tuple[int, ...] = (
        16,
        128,
        512,
        1024,
    )  # context lengths of the timed decode steps, tokens
    repeats: int = 5  # timed runs per point
    warmup: int = 2  # untimed runs per point first
    min_time_s: float = 0.0  # seconds one sample lasts at least (back-to-back calls)
    # Seconds idle before each sample: a served stage runs once per token, after waiting for the rest
    # of the chain, and a call after a pause is slower than one back to back (30 blocks here: 33.5 ms
    # back to back, 35.6 ms after 40 ms idle, 44 ms after 80 ms on a quiet machine; more when other
    # processes run meanwhile); under a CPU quota it also starts, as when served, on a fresh quota.
    idle_s: float = 0.04
    # Blocks timed together, per-block time = their time / span. SmolLM2 on this machine, one thread,
    # one decode step back to back: 0.69 ms for a block alone, 0.99 ms per block for 2, 1.07-1.12 ms
    # for 4 to 30. After an idle pause a call pays a wake-up once, whatever its length (1-2 ms from
    # runs of 8 and 16): after 40 ms idle, per block 1.17-1.39 ms for a run of 8, 1.10-1.27 for 16,
    # 1.10-1.27 for 30 (three runs of 40 rounds, interleaved; a fourth, on a slow hour: 2.05, 1.89,
    # 1.87), so a run of 8 put 6-10 % too much on the 30-block segments the lab plans give one server.
    # Served segments are mostly long; one of a few blocks is now predicted about 1 ms short.
    block_span: int = 32

    def __post_init__(self) -> None:
        if (
            not self.prefill_lengths
            or not self.context_lengths
            or min(self.prefill_lengths + self.context_lengths) < 1
        ):
            raise ConfigError(
                "prefill and context lengths must be positive token counts, at least one of each"
            )
        lows = {"repeats": 1, "block_span": 1, "warmup": 0, "min_time_s": 0, "idle_s": 0}
        wrong = [
            f"{k} must be >= {low}, got {getattr(self, k)}"
            for k, low in lows.items()
            if getattr(self, k) < low
        ]
        if wrong:
            raise ConfigError("; ".join(wrong))


def profile_model(
    source: ModelSource,
    settings: ProfileSettings | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    device: str = "cpu",
    name: str | None = None,
    stop: threading.Event | None = None,
) -> DeviceProfile:
    """Measure `source` on this machine. Callable from a worker (the runtime's Profile rpc) as well; once
    `stop` is set, partition.profile.timing.Stopped ends it before its next timed call."""
    settings = settings or ProfileSettings()
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    spec = source.spec
    if (
        max(settings.context_lengths) + 1 > spec.max_context
        or max(settings.prefill_lengths) > spec.max_context
    ):
        raise ConfigError(f"profile lengths exceed the model's context of {spec.max_context} tokens")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _profile(source, settings, dtype, device, name, stop)
    finally:
        torch.set_num_threads(previous_threads)  # the caller's process keeps its own setting


def _profile(
    source: ModelSource, settings: ProfileSettings, dtype: str, device: str, name: str | None, stop=None
):
    spec = source.spec
    cuda = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    # Before anything is loaded: the memory the segments timed here hold is not the device's to give
    identity = identify(name, torch.get_num_threads(), cuda)
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    n_blocks = spec.n_blocks
    span = block_span(source, settings, DTYPES[dtype])
    units = {
        "embed": Segment(0, 1),
        "block": Segment(1, 1 + span),  # blocks 0 .. span - 1
        "head": Segment(n_blocks + 1, n_blocks + 2),
    }
    costs = {
        kind: _profile_unit(source, kind, segment, settings, DTYPES[dtype], device, sync, stop)
        for kind, segment in units.items()
    }
    top_k_encode_s, top_k_decode_s = _profile_top_k(spec.vocab_size, settings, stop)
    return DeviceProfile(
        device=identity,
        model=ModelRef(source.name, source.digest, n_blocks),
        dtype=dtype,
        embed=costs["embed"],
        block=costs["block"],
        head=costs["head"],
        top_k_encode_s=top_k_encode_s,
        top_k_decode_s=top_k_decode_s,
        tied_weight_bytes=tied_weight_bytes(spec, DTYPES[dtype]),
        prefill_tokens_max=max(settings.prefill_lengths),
        context_tokens_max=max(settings.context_lengths),
    )


def block_span(source: ModelSource, settings: ProfileSettings, dtype: torch.dtype) -> int:
    """How many blocks the profiler times together: `settings.block_span`, at most the model's blocks
    and as many as SPAN_BYTES holds (one at least)."""
    element = torch.tensor([], dtype=dtype).element_size()
    one_block = sum(t.numel() for t in unit_state(source, 1).values()) * element
    return max(1, min(settings.block_span, source.spec.n_blocks, SPAN_BYTES // max(one_block, 1)))


def tied_weight_bytes(spec, dtype: torch.dtype) -> int:
    """Bytes of the [vocab, hidden] matrix the embedding and the head share in a segment holding both
    (partition/model/segment.py shares it when the model ties them and the head stores it [D, V])."""
    if not (spec.tie_embeddings and stores_transposed(spec.hidden_size, spec.vocab_size)):
        return 0
    return spec.vocab_size * spec.hidden_size * torch.tensor([], dtype=dtype).element_size()


def _profile_top_k(vocab_size: int, settings: ProfileSettings, stop=None) -> tuple[float, float]:
    """Seconds per token to send a head's logits as their top K (on the server holding it) and to
    rebuild the logits from them (on the edge): a top-k over the vocabulary, then a vocabulary-sized
    scatter: 0.2-0.35 ms each here on a cold cache, 0.6-0.7 and 0.45-0.5 ms in the lab's profiles
    (after an idle pause), paid every token of a plan whose head is remote.
    Timed on CPU logits, as they are once a CUDA worker has copied them back."""
    from partition.transport.tensors import from_proto, to_top_k_proto

    logits = torch.randn(1, 1, vocab_size)
    message = to_top_k_proto(logits, RETURN_TOP_K)
    encode, decode = time_calls(
        [lambda: to_top_k_proto(logits, RETURN_TOP_K), lambda: from_proto(message)],
        settings.repeats,
        settings.warmup,
        lambda: None,
        settings.min_time_s,
        settings.idle_s,
        stop,
    )
    log.info(
        "profiled top-%d logits: encode %s s, decode %s s", RETURN_TOP_K, encode.median_s, decode.median_s
    )
    return encode.median_s, decode.median_s


def step_tail(logits: torch.Tensor, io: ThreadPoolExecutor) -> int:
    """What the coordinator does right after the head, every token, on the same device: pick the
    token (greedy) and pass the next step to its I/O thread and take the reply back. Timed with the head:
    alone it is small (0.7 ms here), but under a CPU quota it runs on what the head left of the quota
    (about 7 ms at a quarter core), and a served edge pays that every token.
    """
    token = int(torch.argmax(logits[0, -1]))
    io.submit(int, token).result()  # the step to the I/O thread ...
    io.submit(int, token).result()  # ... and its result back
    return token


def _profile_unit(source, kind, segment, settings, dtype, device, sync, stop=None) -> LayerCost:
    """The cost of one unit of `kind`, timed as `segment` (len(segment) units of that kind) / its length."""
    spec = source.spec
    per_unit = len(segment)
    model = load_segment(source, segment, dtype=dtype, device=device)
    max_len = max(max(settings.prefill_lengths), max(settings.context_lengths) + 1)
    cache = model.new_cache(slots=1, max_len=max_len)
    head = kind == "head"

    def inputs(tokens: int) -> torch.Tensor:
        if model.takes_token_ids:
            return torch.randint(0, spec.vocab_size, (1, tokens), device=device)  # [B, S] ids
        return torch.randn(1, tokens, spec.hidden_size, dtype=dtype, device=device)  # [B, S, D]

    def call_with(tokens: int, position: int):
        x = inputs(tokens)

        def call():
            out = model(x, cache, slots=[0], positions=[position], last_token_only=head)
            if head:
                step_tail(out, io)
            return out

        return call

    # One new token at position c attends to c + 1 keys; the cache's contents do not change the time.
    points = [(p, 0) for p in settings.prefill_lengths] + [(1, c) for c in settings.context_lengths]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="profile-io") as io:
        calls = [call_with(tokens, position) for tokens, position in points]
        timings = time_calls(
            calls, settings.repeats, settings.warmup, sync, settings.min_time_s, settings.idle_s, stop
        )
    prefill, decode = timings[: len(settings.prefill_lengths)], timings[len(settings.prefill_lengths) :]
    log.info(
        "profiled %s x %d: prefill %s s, decode %s s",
        kind,
        per_unit,
        [t.median_s for t in prefill],
        [t.median_s for t in decode],
    )
    element = torch.tensor([], dtype=dtype).element_size()
    return LayerCost(
        kind=kind,
        prefill=fit_times(list(settings.prefill_lengths), [t.median_s / per_unit for t in prefill], degree=2),
        decode=fit_times(list(settings.context_lengths), [t.median_s / per_unit for t in decode], degree=1),
        weight_bytes=model.weight_bytes() // per_unit,
        # keys and values: n_kv_heads x head_dim each, per token, per block
        kv_bytes_per_token=2 * spec.n_kv_heads * spec.head_dim * element if kind == "block" else 0,
        # what crosses the cut after this unit: fp32 hidden states (the wire's raw form), or token ids
        activation_bytes_per_token=TOP_K_LOGITS_BYTES if head else RAW_VALUE_BYTES * spec.hidden_size,
        prefill_spread=max(t.spread for t in prefill),
        decode_spread=max(t.spread for t in decode),
    )
