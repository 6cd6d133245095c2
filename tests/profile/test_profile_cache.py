"""The profile cache key: what changes a timing changes the key, so such a profile is measured again."""

import os

import torch

from partition.profile import device
from partition.profile.cache import cache_key
from partition.profile.profiler import ProfileSettings

IDENTITY = {"name": "edge", "cpu_model": "Test CPU", "cuda_device": None}


def key() -> str:
    """This process's key for a quarter-core profile, all else fixed."""
    return cache_key("digest", IDENTITY, "float32", 1, 0.25, ProfileSettings(), 7)


def test_a_cpu_period_a_torch_version_or_fewer_cpus_is_another_key(monkeypatch):
    monkeypatch.setattr(device, "cpu_period_us", lambda: 100_000, raising=False)
    monkeypatch.setattr(torch, "__version__", "2.4.0")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    measured = key()
    assert key() == measured  # the same conditions find the profile
    # 0.25 of a core as 1000 of 4000 us throttles every call; as 25000 of 100000 us only long ones
    monkeypatch.setattr(device, "cpu_period_us", lambda: 4_000, raising=False)
    assert key() != measured
    monkeypatch.setattr(device, "cpu_period_us", lambda: 100_000, raising=False)
    monkeypatch.setattr(torch, "__version__", "2.5.0")
    assert key() != measured
    monkeypatch.setattr(torch, "__version__", "2.4.0")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})  # pinned to one CPU
    assert key() != measured


def test_a_declared_quota_has_no_period_to_key_on(monkeypatch):
    monkeypatch.setenv(device.CPU_QUOTA_ENV, "0.25")
    assert device.cpu_period_us() is None
