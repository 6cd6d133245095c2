"""From running workers to an answer with no hand-written numbers: profile --cluster, plan, serve."""

import dataclasses
import json
import subprocess
import sys
import tomllib

from tests.coordinator.conftest import SERVERS

# Enough points for a fit and no more: what is checked is where each profile comes from, not its numbers.
SMALL = ["--prefill-lengths", "8", "32", "--context-lengths", "16", "64", "--repeats", "1", "--warmup", "0"]


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "partition", *args], capture_output=True, text=True, timeout=timeout
    )


def test_profile_cluster_then_plan_then_serve(workers, tmp_path):
    cluster = tmp_path / "cluster.toml"
    # The edge has no worker: it is profiled in this process, with the threads it declares.
    lines = ['[[device]]\nname = "phone"\nrole = "edge"\nmemory_gb = 1.0\nthreads = 1\n']
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
        assert profile["device"]["threads"] == 1  # the phone's declared threads; the workers' --threads 1
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


def test_profile_cluster_answers_from_each_cache_until_refresh(tmp_path, monkeypatch):
    """--refresh reaches every device: the edge profiled here and the worker through its Profile rpc."""
    from partition.coordinator.profile_cluster import profile_cluster
    from partition.profile import ProfileSettings
    from partition.transport.local import spawn_worker

    cache = tmp_path / "cache"  # one cache for this process (the edge) and the worker
    monkeypatch.setenv("PARTITION_CACHE_DIR", str(cache))
    worker = spawn_worker("server-a", extra_args=("--threads", "1"), env={"PARTITION_CACHE_DIR": str(cache)})
    try:
        cluster = tmp_path / "cluster.toml"
        cluster.write_text(
            '[[device]]\nname = "phone"\nrole = "edge"\n\n'
            f'[[device]]\nname = "server-a"\nrole = "server"\naddress = "{worker.address}"\n'
        )
        settings = ProfileSettings(prefill_lengths=(8, 16), context_lengths=(16, 32), repeats=1, warmup=0)

        def profile(refresh: bool, settings=settings) -> dict[str, int]:
            profile_cluster(
                cluster, "smollm2-135m", tmp_path / "out" / "cluster.toml", settings=settings, refresh=refresh
            )
            return {path.name: path.stat().st_mtime_ns for path in (cache / "profiles").glob("*.json")}

        measured = profile(refresh=False)
        assert len(measured) == 2  # one cached profile per device (their names are in the key)
        assert profile(refresh=False) == measured  # both answered from their caches
        refreshed = profile(refresh=True)
        assert refreshed.keys() == measured.keys()
        assert all(refreshed[name] > measured[name] for name in measured), "a device did not measure again"
        # A setting reaches the worker: each is part of the cache key, so a change is a new profile on
        # both devices, not only on the edge (every setting's way there: tests/transport/test_profile_request.py).
        assert len(profile(False, dataclasses.replace(settings, idle_s=0.0))) == 4
    finally:
        worker.stop()


def _refused_before_profiling(
    tmp_path, monkeypatch, server_a_address: str, model: str = "smollm2-135m", refusal=None
) -> str:
    """The message `profile --cluster` refuses a cluster with server-a at `server_a_address` with
    (a ConfigError unless `refusal`), checked to come before anything is profiled here or written."""
    import pytest

    from partition.coordinator import profile_cluster as module
    from partition.errors import ConfigError

    def profiled_too_early(*_args, **_kwargs):
        raise AssertionError("the edge was profiled before every worker was known to answer as itself")

    monkeypatch.setattr(module, "_profile_here", profiled_too_early)
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(
        '[[device]]\nname = "phone"\nrole = "edge"\n\n'
        f'[[device]]\nname = "server-a"\nrole = "server"\naddress = "{server_a_address}"\n'
    )
    with pytest.raises(refusal or ConfigError) as caught:
        module.profile_cluster(cluster, model, tmp_path / "out" / "cluster.toml")
    assert not (tmp_path / "out").exists()
    return str(caught.value)


def test_a_worker_that_does_not_answer_is_named_before_anything_is_profiled(tmp_path, monkeypatch):
    import socket

    with socket.socket() as placeholder:  # a port nothing listens on: bound, never listening
        placeholder.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{placeholder.getsockname()[1]}"
        message = _refused_before_profiling(tmp_path, monkeypatch, address)
    assert f"the worker of device 'server-a' at {address} does not answer (UNAVAILABLE" in message
    assert f"start it with `partition worker --listen {address} --name server-a`" in message


def test_a_worker_of_another_name_at_a_devices_address_is_named_before_anything_is_profiled(
    tmp_path, monkeypatch
):
    """Its profile would be filed under the device's name, measured on another device."""
    from partition.transport.local import spawn_worker

    other = spawn_worker("server-b", extra_args=("--threads", "1"))
    try:
        message = _refused_before_profiling(tmp_path, monkeypatch, other.address)
    finally:
        other.stop()
    assert f"the worker at {other.address} is 'server-b', not device 'server-a'" in message
    assert f"`partition worker --listen {other.address} --name server-a`" in message


def test_workers_are_profiled_before_the_edge_here(tmp_path, monkeypatch, workers):
    """A worker's refusal (of the model, say) comes before minutes of profiling this machine."""
    from partition.transport.client import StageCallError

    model = tmp_path / "copy.gguf"  # a model path the worker, with no --models-dir, refuses
    model.write_bytes(b"GGUF")
    message = _refused_before_profiling(
        tmp_path, monkeypatch, workers["server-a"], str(model), StageCallError
    )
    assert "PERMISSION_DENIED" in message, message
