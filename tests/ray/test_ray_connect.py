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


@pytest.mark.parametrize("given", ["flag", "environment"])
def test_an_address_where_nothing_answers_fails_at_once(smollm2, tmp_path, ray_env, given):
    plan_file = tmp_path / "plan.json"
    save_plan(split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")]), plan_file)
    address = f"127.0.0.1:{free_port()}"
    ray_flag = ["--ray", address] if given == "flag" else ["--ray"]
    env = ray_env if given == "flag" else ray_env | {"RAY_ADDRESS": address}
    started = time.monotonic()
    result = subprocess.run(
        partition("serve", "--plan", str(plan_file), *ray_flag, "--prompt", "hi"),
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    named = f"--ray {address}" if given == "flag" else f"RAY_ADDRESS={address}"
    assert result.stderr.strip().splitlines()[-1] == (
        f"partition serve: error: nothing answers at {address} ({named}): give the address of the Ray head's "
        "GCS (`ray start --head` prints it, port 6379 by default), or leave --ray's address out to use "
        "RAY_ADDRESS"
    )
