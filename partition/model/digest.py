"""Content digest of a model's files, so every stage of a plan can prove it runs the same weights.

Hashing 100 MB takes a fraction of a second but a 10 GB checkpoint takes tens of seconds, so results
are remembered on disk keyed by (real path, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_CHUNK = 1 << 22  # bytes per read


def _cache_file() -> Path:
    root = Path(os.environ.get("PARTITION_CACHE_DIR") or Path.home() / ".cache" / "partition")
    return root / "digests.json"


def file_digest(path: Path) -> str:
    """sha256 of one file's bytes, hex."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    cache[key] = sha.hexdigest()
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_path)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return cache[key]


def model_digest(files: list[Path]) -> str:
    """`sha256:` + hash over the (name, content digest) of each file, in name order."""
    sha = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        sha.update(path.name.encode())
        sha.update(file_digest(path).encode())
    return "sha256:" + sha.hexdigest()
