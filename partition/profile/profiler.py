"""Per-unit costs of a model on this device (profile): the numbers the planner works from.

For each unit kind (embed, block, head) a one-unit segment is loaded the way a worker loads it, then
timed the way the runtime calls it: prefill of P tokens from position 0 at several P (the head on the
last position only, as the coordinator samples), and one decode step at several context lengths.
Medians are fitted (prefill quadratic in P, decode linear in the context); spreads are recorded.
All blocks have one shape, so block 0 stands for all of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from partition.errors import ConfigError
from partition.model import ModelSource, load_segment
from partition.profile.device import identify
from partition.profile.fit import fit_times
from partition.profile.timing import time_call
from partition.types import (
    RAW_VALUE_BYTES,
    TOKEN_ID_BYTES,
    DeviceProfile,
    LayerCost,
    ModelRef,
    Segment,
)

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    min_time_s: float = 0.0  # seconds one sample lasts at least (back-to-back calls; for CPU quotas)

    def __post_init__(self) -> None:
        if (
            not self.prefill_lengths
            or not self.context_lengths
            or min(self.prefill_lengths + self.context_lengths) < 1
        ):
            raise ConfigError(
                "prefill and context lengths must be positive token counts, at least one of each"
            )
        if self.repeats < 1 or self.warmup < 0 or self.min_time_s < 0:
            raise ConfigError(
                f"repeats must be >= 1, warmup and min_time_s >= 0; got {self.repeats}, {self.warmup}, {self.min_time_s}"
            )


def profile_model(
    source: ModelSource,
    settings: ProfileSettings | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    device: str = "cpu",
    name: str | None = None,
) -> DeviceProfile:
    """Measure `source` on this machine. Callable from a worker (the runtime's Profile rpc) as well."""
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
        return _profile(source, settings, dtype, device, name)
    finally:
        torch.set_num_threads(previous_threads)  # the caller's process keeps its own setting


def _profile(source: ModelSource, settings: ProfileSettings, dtype: str, device: str, name: str | None):
    spec = source.spec
    cuda = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    n_blocks = spec.n_blocks
    units = {"embed": Segment(0, 1), "block": Segment(1, 2), "head": Segment(n_blocks + 1, n_blocks + 2)}
    costs = {
        kind: _profile_unit(source, kind, segment, settings, DTYPES[dtype], device, sync)
        for kind, segment in units.items()
    }
    return DeviceProfile(
        device=identify(name, torch.get_num_threads(), cuda),
        model=ModelRef(source.name, source.digest, n_blocks),
        dtype=dtype,
        embed=costs["embed"],
        block=costs["block"],
        head=costs["head"],
    )


def _profile_unit(source, kind, segment, settings, dtype, device, sync) -> LayerCost:
    spec = source.spec
    model = load_segment(source, segment, dtype=dtype, device=device)
    max_len = max(max(settings.prefill_lengths), max(settings.context_lengths) + 1)
    cache = model.new_cache(slots=1, max_len=max_len)
    head = kind == "head"

    def inputs(tokens: int) -> torch.Tensor:
        if model.takes_token_ids:
            return torch.randint(0, spec.vocab_size, (1, tokens), device=device)  # [B, S] ids
        return torch.randn(1, tokens, spec.hidden_size, dtype=dtype, device=device)  # [B, S, D]

    def timed(tokens: int, position: int):
        x = inputs(tokens)
        return time_call(
            lambda: model(x, cache, slots=[0], positions=[position], last_token_only=head),
            settings.repeats,
            settings.warmup,
            sync,
            settings.min_time_s,
        )

    prefill = [timed(p, 0) for p in settings.prefill_lengths]
    # One new token at position c attends to c + 1 keys; the cache's contents do not change the time.
    decode = [timed(1, c) for c in settings.context_lengths]
    log.info(
        "profiled %s: prefill %s s, decode %s s",
        kind,
        [t.median_s for t in prefill],
        [t.median_s for t in decode],
    )
    element = torch.tensor([], dtype=dtype).element_size()
    return LayerCost(
        kind=kind,
        prefill=fit_times(list(settings.prefill_lengths), [t.median_s for t in prefill], degree=2),
        decode=fit_times(list(settings.context_lengths), [t.median_s for t in decode], degree=1),
        weight_bytes=model.weight_bytes(),
        # keys and values: n_kv_heads x head_dim each, per token, per block
        kv_bytes_per_token=2 * spec.n_kv_heads * spec.head_dim * element if kind == "block" else 0,
        # what crosses the cut after this unit: fp32 hidden states (the wire's raw form), or token ids
        activation_bytes_per_token=TOKEN_ID_BYTES if head else RAW_VALUE_BYTES * spec.hidden_size,
        prefill_spread=max(t.spread for t in prefill),
        decode_spread=max(t.spread for t in decode),
    )
