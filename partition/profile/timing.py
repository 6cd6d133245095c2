"""Timing calls honestly (profile): warm up, repeat, synchronize the device, keep the median."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    median_s: float  # seconds, median of the timed samples
    p10_s: float  # seconds
    p90_s: float  # seconds
    repeats: int  # timed samples (warm-up runs excluded)

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how much the samples disagreed."""
        return (self.p90_s - self.p10_s) / self.median_s if self.median_s > 0 else 0.0


def time_call(
    fn: Callable[[], object],
    repeats: int,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
    min_time_s: float = 0.0,
    idle_s: float = 0.0,
) -> Timing:
    """Run `fn` `warmup` times untimed, then take `repeats` timed samples (device synchronized).

    A sample is one call, or with `min_time_s` as many back-to-back calls as last that long, divided
    by their number: under a CPU quota (cgroup CFS) a single short call may run in a burst at full
    speed, while a sustained load sees the quota's rate. With `idle_s`, the caller sleeps that long
    before each sample, as a pipeline stage idles between tokens while the rest of the chain works.
    """
    return time_calls([fn], repeats, warmup, sync, min_time_s, idle_s)[0]


def time_calls(
    fns: Sequence[Callable[[], object]],
    repeats: int,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
    min_time_s: float = 0.0,
    idle_s: float = 0.0,
    stop: threading.Event | None = None,
) -> list[Timing]:
    """`time_call` of each of `fns`, their samples taken in turn (fn 1, fn 2, ..., fn 1, ...): a host
    that slows down for a second then costs every point one sample, instead of all of one point's
    samples, which would bend the curve fitted through the points. Once `stop` is set, Stopped is
    raised before the next call (a worker's profile whose caller went away)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")

    def go_on() -> None:
        if stop is not None and stop.is_set():
            raise Stopped("the profile was stopped")

    for fn in fns:
        for _ in range(warmup):
            go_on()
            fn()
    sync()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, taken in zip(fns, samples, strict=True):
            go_on()
            taken.append(_sample(fn, sync, min_time_s, idle_s))
    return [_timing(taken) for taken in samples]


class Stopped(Exception):
    """A profile stopped before it was done (time_calls' `stop`)."""


def _sample(fn: Callable[[], object], sync: Callable[[], None], min_time_s: float, idle_s: float) -> float:
    """Seconds per call of one sample."""
    if idle_s > 0:
        time.sleep(idle_s)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s:
            return elapsed / calls


def _timing(samples: list[float]) -> Timing:
    samples = sorted(samples)
    if len(samples) >= 2:
        deciles = statistics.quantiles(samples, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = samples[0]
    return Timing(statistics.median(samples), p10, p90, len(samples))
