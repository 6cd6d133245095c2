"""`ray job submit -- partition serve --ray` against a local head started with `ray start --head`.

The head is one real Ray node advertising all three devices; it is started with `--block` so that
its process id owns every Ray process of the cluster, and stopped by that id (SIGTERM), never with
`ray stop`. Every port is chosen free, so it runs beside any other Ray instance on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from partition.artifacts import save_plan
from tests.coordinator.plans import split_plan
from tests.ray.helpers import NODE_OBJECT_STORE_BYTES, free_port, partition, stop_process, wait_gone

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")
pytestmark = pytest.mark.ray

RESOURCES = {"device:phone": 1, "device:server-a": 1, "device:server-b": 1}
START_TIMEOUT_S = 90.0  # seconds for the head and its job server to come up on a loaded machine
JOB_TIMEOUT_S = 300.0  # seconds for the whole job: driver, actors, load, answer


def _ray(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("ray")), *args]


@dataclass(frozen=True)
class Head:
    jobs: str  # http address of the job server (the dashboard)
    gcs: str  # host:port drivers and the state API connect to


START_TRIES = 3  # the head's ports are picked free a moment before it binds them: one may be taken meanwhile


class _HeadExited(RuntimeError):
    pass


@pytest.fixture(scope="module")
def head(ray_env, tmp_path_factory):
    """A `ray start --head --block` process, stopped by its pid."""
    import psutil

    log = tmp_path_factory.mktemp("ray-head") / "ray-start.log"
    for attempt in range(1, START_TRIES + 1):
        ports = dict(zip(HEAD_PORT_FLAGS, _distinct_free_ports(len(HEAD_PORT_FLAGS)), strict=True))
        command = _ray(
            "start", "--head", "--block", "--num-cpus", "2", "--resources", json.dumps(RESOURCES),
            "--object-store-memory", str(NODE_OBJECT_STORE_BYTES), "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--temp-dir", ray_env["RAY_TMPDIR"], "--disable-usage-stats",
            *(str(item) for pair in ports.items() for item in pair),
        )  # fmt: skip
        started = time.monotonic()
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=ray_env)
        address = f"http://127.0.0.1:{ports['--dashboard-port']}"
        try:
            _wait_for_job_server(address, process)
            break
        except _HeadExited as error:
            said = log.read_text(errors="replace")[-3000:]
            if attempt == START_TRIES:
                raise RuntimeError(
                    f"{error} {START_TRIES} times; its output the last time:\n{said}"
                ) from None
            print(f"{error} (try {attempt} of {START_TRIES}), started again on other ports:\n{said}")
    descendants: list[int] = []
    try:
        print(f"ray head up in {time.monotonic() - started:.1f} s")
        yield Head(address, f"127.0.0.1:{ports['--port']}")
        descendants = [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
    finally:
        stop_process(process, timeout_s=60)
    assert wait_gone([process.pid, *descendants]) == [], "ray processes left after stopping the head"


HEAD_PORT_FLAGS = (
    "--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
    "--ray-client-server-port", "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port",
    "--object-manager-port",
)  # fmt: skip


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def _wait_for_job_server(address: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _HeadExited(f"`ray start --head` exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the Ray job server at {address} did not answer within {START_TIMEOUT_S:g} s")


def test_ray_job_submit_serves_the_plan_and_the_answer_is_in_the_job_logs(head, smollm2, tmp_path, ray_env):
    plan = split_plan(
        smollm2, [("phone", 0, 9, "raw"), ("server-a", 9, 20, "int8"), ("server-b", 20, 32, "raw")]
    )
    plan_file = tmp_path / "plan.json"
    save_plan(plan, plan_file)
    job_id = f"partition-test-{int(time.time())}"
    entrypoint = partition(
        "serve", "--plan", str(plan_file), "--ray", "--threads", "1", "--max-context", "256",
        "--max-sessions", "1", "--chat", "--prompt", "What is the capital of France?",
        "--max-new-tokens", "24", "--json",
    )  # fmt: skip
    started = time.monotonic()
    submit = subprocess.run(
        _ray(
            "job", "submit", "--address", head.jobs, "--submission-id", job_id,
            # the driver (the coordinator, the edge's segments) runs on the node of device:phone
            "--entrypoint-resources", json.dumps({"device:phone": 0.01}), "--",
            *entrypoint,
        ),
        capture_output=True, text=True, timeout=JOB_TIMEOUT_S, env=ray_env,
    )  # fmt: skip
    print(f"ray job submit returned in {time.monotonic() - started:.1f} s")
    logs = subprocess.run(
        _ray("job", "logs", "--address", head.jobs, job_id),
        capture_output=True, text=True, timeout=60, env=ray_env,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert _job_status(head.jobs, job_id) == "SUCCEEDED", logs.stdout[-3000:]
    answers = [json.loads(line) for line in logs.stdout.splitlines() if line.startswith('{"plan_id"')]
    assert len(answers) == 1, logs.stdout[-3000:]
    answer = answers[0]
    assert "Paris" in answer["text"]
    assert answer["plan_id"] == plan.plan_id
    assert [h["to"] for h in answer["hops"]] == ["server-a", "server-b", "phone"]
    # the job's stage actors ended with it
    assert _alive_stage_actors(head.gcs) == []


def _job_status(address: str, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(address).get_job_status(job_id).value)


def _alive_stage_actors(address: str, timeout_s: float = 20.0) -> list[str]:
    from ray.util.state import list_actors

    deadline = time.monotonic() + timeout_s
    while True:
        alive = [
            actor.name
            for actor in list_actors(address=address, filters=[("state", "=", "ALIVE")])
            if actor.class_name == "StageActor"
        ]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)
