"""`partition serve --http` as a user runs it: a real worker, the CLI in its own process, an HTTP client."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from partition.artifacts import save_plan
from partition.transport.local import spawn_worker
from tests.api.test_http_endpoint import QUESTION
from tests.coordinator.plans import served_by_one_worker, split_plan

TIMEOUT_S = 300


def post(url: str, path: str, body: dict) -> tuple[int, dict]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
    try:
        connection.request(
            "POST", parts.path + path, body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def health(url: str) -> tuple[int, dict]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def wait_for_url(serve: subprocess.Popen) -> tuple[str, list[str]]:
    """The endpoint's base URL once serve says it answers, and the lines it wrote until then."""
    said = []
    while not any("answers at" in line for line in said):
        line = serve.stderr.readline()
        assert line, "".join(said)[-3000:]
        said.append(line)
    return re.search(r"answers at (http://\S+/v1)", said[-1]).group(1), said


def ask_paris(url: str) -> bool:
    status, reply = post(url, "/chat/completions", {"messages": QUESTION, "temperature": 0, "max_tokens": 16})
    assert status == 200, reply
    return "Paris" in reply["choices"][0]["message"]["content"]


def metrics(url: str) -> str:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def test_serve_http_answers_names_a_dead_worker_heals_when_it_is_back_and_stops_on_sigterm(smollm2, tmp_path):
    worker = spawn_worker("server-a", extra_args=("--threads", "1"))
    serve = None
    try:
        plan, plan_file, cluster = served_by_one_worker(smollm2, tmp_path, worker.address)
        serve = subprocess.Popen(
            [sys.executable, "-m", "partition", "serve", "--plan", str(plan_file), "--cluster",
             str(cluster), "--threads", "1", "--max-context", "256", "--http", "127.0.0.1:0",
             "--reconnect-wait", "3"],  # server-a stays away until the test starts it: one attempt tells so
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        url, said = wait_for_url(serve)
        assert plan.plan_id in said[-1]

        assert ask_paris(url)

        worker.process.kill()
        worker.process.wait(timeout=30)
        status, reply = post(url, "/completions", {"prompt": "Hello", "max_tokens": 4})
        assert status == 503, reply
        message = reply["error"]["message"]
        assert f"server-a at {worker.address}: UNAVAILABLE" in message and "start it again" in message
        assert reply["error"]["type"] == "server_error"
        # the endpoint stays up, and tells a load balancer it cannot answer until server-a is back
        status, said = health(url)
        assert status == 503 and said["status"] == "unavailable" and said["away"] == ["server-a"], said
        assert "start the worker of server-a again" in said["advice"]

        # started again at its address, it gets its segment back with the next request (503 seen before)
        port = int(worker.address.rsplit(":", 1)[1])
        worker = spawn_worker("server-a", port=port, extra_args=("--threads", "1"))
        assert ask_paris(url)
        assert health(url) == (
            200,
            {"status": "ok", "model": plan.model.name, "plan_id": plan.plan_id, "epoch": plan.epoch},
        )
        # and when it restarts between two requests, the next one loads it again and is answered
        worker.process.kill()
        worker.process.wait(timeout=30)
        worker = spawn_worker("server-a", port=port, extra_args=("--threads", "1"))
        assert ask_paris(url)
        assert "partition_worker_reloads_total 2" in metrics(url)

        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
        assert serve.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
            serve.wait()
        worker.stop()


def wait_until_refused(address: str, timeout_s: float = 60) -> None:
    """Return once nothing accepts connections at `address` (a worker that took its SIGTERM)."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, f"{address} still accepts connections after {timeout_s} s"
        time.sleep(0.02)


def children_named(parent: int, device: str) -> list[int]:
    """Process ids of the `partition worker --name DEVICE` processes `parent` started."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"worker" in argv and device.encode() in argv:
            found.append(int(entry.name))
    return found


def test_serve_spawn_local_starts_a_worker_of_its_own_again_when_it_dies(smollm2, tmp_path):
    plan = split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
    save_plan(plan, tmp_path / "plan.json")
    serve = subprocess.Popen(
        [sys.executable, "-m", "partition", "-v", "serve", "--plan", str(tmp_path / "plan.json"),
         "--spawn-local", "--threads", "1", "--max-context", "256", "--http", "127.0.0.1:0",
         "--served-model-name", "smollm2-135m", "small"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url, said = wait_for_url(serve)
        started = re.search(r"started local worker server-a at (\S+) \(pid (\d+)\)", "".join(said))
        address, pid = started.group(1), int(started.group(2))
        assert ask_paris(url)
        status, reply = post(url, "/completions", {"model": "small", "prompt": "Hi", "max_tokens": 1})
        assert status == 200 and reply["model"] == "smollm2-135m", reply  # an alias; replies the first

        os.kill(pid, signal.SIGKILL)  # the worker serve started for server-a, by its process id
        wait_until_refused(address)
        status, said = health(url)  # still in rotation: the next request starts the worker again
        assert status == 200 and said["status"] == "degraded" and said["away"] == ["server-a"], said
        assert ask_paris(url)  # answered: serve started it again and gave it its segment
        assert "partition_worker_reloads_total 1" in metrics(url)
        # A SIGTERM: the new worker closes its port at once, but lives on for its grace period
        (successor,) = children_named(serve.pid, "server-a")
        os.kill(successor, signal.SIGTERM)
        wait_until_refused(address)  # the signal handled: asked before that, the worker would answer
        assert ask_paris(url)  # answered: serve did not wait for it to exit before starting another
        assert "partition_worker_reloads_total 2" in metrics(url)

        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
        assert serve.returncode == 0, err[-3000:]
        again = re.search(
            r"local worker server-a \(pid (\d+)\) exited with -9 \(its log is kept at (\S+)\); "
            r"starting it again at (\S+)",
            err,
        )
        assert again and int(again.group(1)) == pid and again.group(3) == address, err[-3000:]
        kept = Path(again.group(2))
        assert "serving on" in kept.read_text()  # the log of the worker that died, as said
        shutil.rmtree(kept.parent)
        assert re.search(
            rf"started local worker server-a at {re.escape(address)} \(pid (?!{pid}\b)\d+\)", err
        )
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def test_serve_http_refuses_a_prompt_and_a_taken_port_before_deploying(smollm2, tmp_path):
    plan = split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
    save_plan(plan, tmp_path / "plan.json")
    base = [
        sys.executable,
        "-m",
        "partition",
        "serve",
        "--plan",
        str(tmp_path / "plan.json"),
        "--spawn-local",
    ]
    both = subprocess.run(
        [*base, "--http", "127.0.0.1:0", "--prompt", "Hi"], capture_output=True, text=True, timeout=120
    )
    assert both.returncode == 2 and "--http serves requests from HTTP clients: drop --prompt" in both.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [*base, "--http", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120
        )
    assert busy.returncode == 2, busy.stderr[-3000:]
    assert f"--http 127.0.0.1:{port}: cannot listen there" in busy.stderr
    assert "started local worker" not in busy.stderr and "Traceback" not in busy.stderr
