"""Profiling (profile -> plan): per-unit costs of a model on this device, cached on disk.

profile = profile_device("smollm2-135m", threads=2)   # a DeviceProfile, from the cache when it can
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from partition.model.source import ModelSource
from partition.profile.cache import cache_key, cached, default_cache_dir, ready_cache_dir, store
from partition.profile.device import cpu_model, cpu_quota_cores, memory_available_bytes
from partition.profile.profiler import METHOD, ProfileSettings, profile_model
from partition.types import DeviceProfile

__all__ = ["ProfileSettings", "profile_device", "profile_model"]


def profile_device(
    model: str | ModelSource,
    settings: ProfileSettings | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    device: str = "cpu",
    name: str | None = None,
    cache_dir: Path | None = None,
    refresh: bool = False,
    stop: threading.Event | None = None,
) -> DeviceProfile:
    """The profile of `model` (a name or path, or a source resolved already) on this machine: from the
    cache unless `refresh`, else measured and stored.

    `cache_dir=None` uses `default_cache_dir()`; pass a folder per test session to keep tests apart.
    Once `stop` is set, the measuring ends (partition.profile.timing.Stopped) and nothing is stored.
    """
    import socket

    import torch

    from partition.model import resolve_model

    settings = settings or ProfileSettings()
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    threads = threads or torch.get_num_threads()
    cuda = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    identity = {"name": name or socket.gethostname(), "cpu_model": cpu_model(), "cuda_device": cuda}
    key = cache_key(source.digest, identity, dtype, threads, cpu_quota_cores(), settings, METHOD)
    directory = ready_cache_dir(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if not refresh and (hit := cached(directory, key)) is not None:
        # Timings keep; the memory this device offers now does not (another cgroup limit, other processes)
        now = dataclasses.replace(hit.device, memory_bytes=memory_available_bytes())
        return dataclasses.replace(hit, device=now)
    profile = profile_model(
        source, settings, dtype=dtype, threads=threads, device=device, name=identity["name"], stop=stop
    )
    store(directory, key, profile)
    return profile
