"""Real local Ray clusters for the Ray tests: small nodes, their own temp dir, stopped by process id.

Every Ray process these tests start lives under one temp dir of their own (RAY_TMPDIR), so nothing
here touches another Ray instance on the machine (`ray stop` would; it is never used).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.ray.helpers import SOURCE_ROOT


@pytest.fixture(scope="module")
def ray_env():
    """Environment for Ray processes: no token auth, no usage stats, a private temp dir, and this
    checkout's `partition` on the path of every worker Ray starts (actors import it there)."""
    temp = tempfile.mkdtemp(prefix="prt-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    values = {
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": temp,
        "PYTHONPATH": os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p),
        "TOKENIZERS_PARALLELISM": "false",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in values.items():
            patch.setenv(key, value)
        yield dict(os.environ)
    shutil.rmtree(temp, ignore_errors=True)
