"""`serve --ray` with no cluster to connect to: one line on stderr within seconds, never a hang."""

from __future__ import annotations

import subprocess
import time

import pytest

from partition.artifacts import save_plan
from tests.coordinator.plans import split_plan
from tests.ray.helpers import free_port, partition

pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")
pytestmark = pytest.mark.ray


def test_an_address_where_nothing_answers_fails_at_once(smollm2, tmp_path, ray_env):
    plan_file = tmp_path / "plan.json"
    save_plan(split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")]), plan_file)
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        partition("serve", "--plan", str(plan_file), "--ray", address, "--prompt", "hi"),
        capture_output=True, text=True, timeout=120, env=ray_env,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"partition serve: error: nothing answers at {address}: give the address of the Ray head's GCS "
        "(`ray start --head` prints it, port 6379 by default), or leave it out to use RAY_ADDRESS"
    )
