"""ProfileSettings on the wire: the coordinator's `profile --cluster` writes them into a ProfileRequest,
the worker's Stage.Profile reads them back. Every setting is part of a profile's cache key, so each
must reach the worker, or its profile would be measured, and filed, with another one."""

from __future__ import annotations

from dataclasses import replace

from partition.profile import ProfileSettings
from partition.transport.generated import measure_pb2


def profile_request(
    model: str, settings: ProfileSettings | None, refresh: bool = False
) -> measure_pb2.ProfileRequest:
    """The request for a profile of `model` with `settings` (None: the worker's defaults)."""
    request = measure_pb2.ProfileRequest(model=model, refresh=refresh)
    if settings is not None:
        request.prefill_lengths.extend(settings.prefill_lengths)
        request.context_lengths.extend(settings.context_lengths)
        request.repeats = settings.repeats
        request.warmup = settings.warmup
        request.min_time_s = settings.min_time_s
        request.idle_s = settings.idle_s
        request.block_span = settings.block_span
    return request


def requested_settings(request: measure_pb2.ProfileRequest) -> ProfileSettings:
    """The settings a request asks for, the profiler's defaults where it leaves one unset; ConfigError
    (the caller's mistake: INVALID_ARGUMENT) for a value the profiler refuses."""
    given = {
        "prefill_lengths": tuple(request.prefill_lengths) or None,
        "context_lengths": tuple(request.context_lengths) or None,
        "repeats": request.repeats or None,
        "warmup": request.warmup if request.HasField("warmup") else None,
        "min_time_s": request.min_time_s or None,
        "idle_s": request.idle_s if request.HasField("idle_s") else None,
        "block_span": request.block_span if request.HasField("block_span") else None,
    }
    return replace(ProfileSettings(), **{k: v for k, v in given.items() if v is not None})
