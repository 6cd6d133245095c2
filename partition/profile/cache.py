"""Profiles cached on disk (profile), keyed by what makes timings comparable.

Key: model digest, device identity (name, CPU model, accelerator), dtype, threads, the CPU quota of
this process's cgroup (an emulated slow device must not reuse a fast profile), the settings and the
profiler's method (profiler.METHOD: how it samples).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from partition.artifacts import load_profile, save_profile
from partition.errors import ConfigError
from partition.types import DeviceProfile


def default_cache_dir() -> Path:
    root = (
        os.environ.get("PARTITION_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "partition"
    )
    return Path(root) / "profiles"


def cache_key(
    model_digest: str,
    identity: dict,
    dtype: str,
    threads: int,
    quota: float | None,
    settings,
    method: int,
) -> str:
    content = {
        "method": method,
        "model": model_digest,
        "device": identity,
        "dtype": dtype,
        "threads": threads,
        "cpu_quota": quota,
        "settings": asdict(settings),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]


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
