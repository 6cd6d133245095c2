"""From running workers to an answer with no hand-written numbers: profile --cluster, plan, serve."""

import json
import subprocess
import sys
import tomllib

from tests.coordinator.conftest import SERVERS

SMALL = ["--prefill-lengths", "8", "32", "--context-lengths", "16", "64", "--repeats", "2"]


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "partition", *args], capture_output=True, text=True, timeout=timeout
    )


def test_profile_cluster_then_plan_then_serve(workers, tmp_path):
    cluster = tmp_path / "cluster.toml"
    lines = ['[[device]]\nname = "phone"\nrole = "edge"\nmemory_gb = 1.0\n']
    for name in SERVERS[:2]:
        lines.append(
            f'[[device]]\nname = "{name}"\nrole = "server"\naddress = "{workers[name]}"\nmemory_gb = 4.0\n'
        )
    cluster.write_text("\n".join(lines))
    profiled = tmp_path / "profiled" / "cluster.toml"
    result = _cli(
        "profile", "--cluster", str(cluster), "--model", "smollm2-135m", "--out", str(profiled), *SMALL
    )
    assert result.returncode == 0, result.stderr[-3000:]

    data = tomllib.loads(profiled.read_text())
    devices = {d["name"]: d for d in data["device"]}
    assert set(devices) == {"phone", *SERVERS[:2]}
    for name in devices:
        profile = json.loads((profiled.parent / f"{name}.json").read_text())
        assert profile["device"]["name"] == name  # profiled by the worker itself
    pairs = {(link["from"], link["to"]) for link in data["link"]}
    assert len(pairs) == 6  # 3 pairs, both directions, all measured
    for link in data["link"]:
        assert 0 < link["latency_ms"] < 50 and link["bandwidth_mbps"] > 10  # loopback

    plan = tmp_path / "plan.json"
    result = _cli("plan", "--model", "smollm2-135m", "--cluster", str(profiled), "--out", str(plan))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "even" in result.stdout and "memory_proportional" in result.stdout

    result = _cli(
        "serve", "--plan", str(plan), "--cluster", str(profiled), "--chat", "--prompt",
        "What is the capital of France?", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Paris" in json.loads(result.stdout)["text"]
