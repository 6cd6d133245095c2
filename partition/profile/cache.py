"""Profiles cached on disk (profile), keyed by what makes timings comparable.

Key: model digest, device identity (name, CPU model, accelerator), dtype, threads, the CPU quota of
this process's cgroup (an emulated slow device must not reuse a fast profile), the settings, the
profiler's method (profiler.METHOD: how it samples) and the runtime (`current_runtime`). A key that
changes only misses: entries under an older key stay on disk, unread.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from partition.artifacts import load_profile, save_profile
from partition.errors import ConfigError
from partition.profile import device
from partition.types import DeviceProfile


def default_cache_dir() -> Path:
    root = (
        os.environ.get("PARTITION_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "partition"
    )
    return Path(root) / "profiles"


def ready_cache_dir(directory: Path) -> Path:
    """The cache folder, made if missing, or a ConfigError saying why it cannot be: checked before a
    profile is measured, not after (a minute of measuring lost to a path that names a file)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(
            f"the profile cache {directory} is a file, not a folder: give a folder with --cache-dir "
            "(or PARTITION_CACHE_DIR); it is made if missing"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"cannot make the profile cache folder {directory}: {error.strerror}; "
            "give another with --cache-dir (or PARTITION_CACHE_DIR)"
        ) from None
    return directory


def cache_key(
    model_digest: str,
    identity: dict,
    dtype: str,
    threads: int,
    quota: float | None,
    settings,
    method: int,
    runtime: dict | None = None,
) -> str:
    """The key of a profile measured under these conditions; `runtime=None` is this process's own."""
    content = {
        "method": method,
        "model": model_digest,
        "device": identity,
        "dtype": dtype,
        "threads": threads,
        "cpu_quota": quota,
        "settings": asdict(settings),
        "runtime": current_runtime() if runtime is None else runtime,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]


def current_runtime() -> dict:
    """What else in this process changes its timings.

    The CFS period of its quota: 0.25 of a core as 25000 of 100000 us ran the LM head in 6.9 ms after a
    pause, as 1000 of 4000 us in 14 ms. torch's version: its kernels. How many CPUs the calling thread
    may run on: threads beyond them take turns, so 8 threads pinned to one CPU are not 8 on 16.
    """
    import torch

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: no affinity to read
        cpus = os.cpu_count()
    return {"cpu_period_us": device.cpu_period_us(), "torch": str(torch.__version__), "cpus": cpus}


def cached(directory: Path, key: str) -> DeviceProfile | None:
    path = Path(directory) / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return load_profile(path)
    except ConfigError:
        return None  # a stale or damaged entry is measured again


def store(directory: Path, key: str, profile: DeviceProfile) -> Path:
    path = Path(directory) / f"{key}.json"
    save_profile(profile, path)
    return path
