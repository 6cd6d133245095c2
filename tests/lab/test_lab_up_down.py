"""The emulated lab for real: namespaces, tbf, delay proxies and CPU quota, measured, then removed.

A stand-in worker (an echo server) runs where the real worker will: the launcher takes the command as
data. Needs root, iproute2 and the cgroup v1 cpu controller; skipped with the exact reason elsewhere.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from partition import lab
from partition.errors import LabError
from partition.lab import network, processes
from partition.lab.requirements import missing
from partition.lab.state import LabState, state_path
from partition.lab.system import sh
from tests.lab.netprobe import echoed_mbps, round_trips

pytestmark = [pytest.mark.lab, pytest.mark.skipif(bool(missing()), reason="; ".join(missing()))]

ECHO = str(Path(__file__).with_name("echo_server.py"))
NETPROBE = str(Path(__file__).with_name("netprobe.py"))
REPO = Path(__file__).parents[2]
PORT = 7101

BURN = "import time\nstart = time.time(); cpu = time.process_time()\nwhile time.time() - start < 1.0: pass\nprint((time.process_time() - cpu) / (time.time() - start))"


def config_text(name: str, worker_command: list[str]) -> str:
    return f"""
[lab]
name = "{name}"
port = {PORT}
worker_command = {json.dumps(worker_command)}

[[device]]
name = "edge"
role = "edge"
cpu = 0.25
threads = 1
bandwidth_mbps = 50
delay_ms = 10

[[device]]
name = "server"
role = "server"
"""


def write_config(tmp_path: Path, worker_command: list[str]) -> Path:
    name = f"t{os.getpid() % 100000}-{len(list(tmp_path.iterdir()))}"
    path = tmp_path / f"{name}.toml"
    path.write_text(config_text(name, worker_command))
    return path


def leftovers(state: LabState) -> list[str]:
    """Everything of the lab still on the machine."""
    found = [f"netns {n}" for n in state.netns if network.namespace_exists(n)]
    found += [f"link {link}" for link in [*state.links, state.bridge] if link and network.link_exists(link)]
    found += [f"cgroup {g}" for g in state.cgroups if Path(g).exists()]
    found += [f"{r.kind} {r.pid}" for r in state.processes if processes.is_running(r)]
    if state.path.exists():
        found.append(f"state {state.path}")
    return found


def inside(state: LabState, device: str, argv: list[str]) -> str:
    done = subprocess.run(
        lab.command_in(state, device, argv),
        capture_output=True,
        text=True,
        timeout=30,
        env=lab.lab.child_env(),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lab_shapes_delays_limits_and_cleans_up(tmp_path):
    config = lab.load_lab_config(write_config(tmp_path, [sys.executable, ECHO, "{listen}"]))
    state = lab.up(config, tmp_path / "state", ready_timeout_s=30)
    try:
        edge = (state.devices["edge"]["ip"], PORT)
        server = (state.devices["server"]["ip"], PORT)

        # Delay: the host counts as the edge, so edge <-> server pays 10 ms each way and host <-> edge nothing.
        assert statistics.median(round_trips(edge, 10)) < 0.002
        rtt_server = statistics.median(round_trips(server, 20))
        assert 0.020 <= rtt_server <= 0.0225, rtt_server

        # Bandwidth: 50 Mbit/s on the edge's link (echoed: both directions shaped); the server is unshaped.
        assert 0.75 * 50 <= echoed_mbps(edge, 3_000_000) <= 1.02 * 50
        assert echoed_mbps(server, 3_000_000) > 150

        # From inside the edge: the same 10 ms to the server, and a quarter of a core.
        probe = json.loads(
            inside(state, "edge", [sys.executable, NETPROBE, f"{server[0]}:{PORT}", "10", "0"])
        )
        assert 0.020 <= statistics.median(probe["rtt_s"]) <= 0.0225
        share = float(inside(state, "edge", [sys.executable, "-c", BURN]))
        assert 0.20 <= share <= 0.30, share

        # The cluster file names the devices where they listen, and the emulated link.
        cluster = Path(state.cluster_file).read_text()
        assert f'address = "{edge[0]}:{PORT}"' in cluster and "bandwidth_mbps = 50" in cluster

        with pytest.raises(LabError, match="already up"):
            lab.up(config, tmp_path / "state")
    finally:
        lab.down(config.name, tmp_path / "state")
    assert leftovers(state) == []
    # Its addresses are gone, so is the cluster file naming them; the logs stay to be read.
    assert not Path(state.cluster_file).exists()
    assert sorted(path.name for path in state.run_dir.iterdir()) == [
        "edge.log",
        "edge.proxy.log",
        "server.log",
        "server.proxy.log",
    ]


def test_a_failed_up_shows_only_its_own_log(tmp_path):
    command = [sys.executable, "-c", "import sys; sys.exit('attempt failed')"]
    config = lab.load_lab_config(write_config(tmp_path, command))
    for _ in range(2):
        with pytest.raises(LabError) as failure:
            lab.up(config, tmp_path / "state", ready_timeout_s=20)
    tail = str(failure.value).split("edge.log:\n", 1)[1]
    assert tail == "attempt failed"


def test_ready_timeout_is_reported_as_given(tmp_path):
    command = [sys.executable, "-c", "import time; time.sleep(120)"]
    config = lab.load_lab_config(write_config(tmp_path, command))
    with pytest.raises(LabError, match="does not accept connections at .* after 0.3 s"):
        lab.up(config, tmp_path / "state", ready_timeout_s=0.3)
    assert lab.down(None, tmp_path / "state") == []  # the failed up removed its lab


def test_failed_up_removes_what_it_made(tmp_path, monkeypatch):
    command = [sys.executable, "-c", "import sys; sys.exit('boom: no model here')"]
    config = lab.load_lab_config(write_config(tmp_path, command))
    directory = tmp_path / "state"
    seen = {}
    original = LabState.save

    def spy(self):  # remember the last state written, to check it is all gone
        seen["state"] = LabState(**{**vars(self), "processes": list(self.processes)})
        original(self)

    monkeypatch.setattr(LabState, "save", spy)
    with pytest.raises(LabError, match="(?s)worker of edge exited during `lab up`.*boom: no model here"):
        lab.up(config, directory, ready_timeout_s=20)
    assert seen["state"].netns and seen["state"].processes  # it got as far as starting processes
    assert leftovers(seen["state"]) == []


def test_a_ctrl_c_as_the_bridge_is_made_leaves_nothing_behind(tmp_path, monkeypatch):
    """The bridge is made before it is recorded (making it claims the lab number): an interrupt right
    after it is made must still find it recorded, so that the failed `up` removes it."""
    config = lab.load_lab_config(write_config(tmp_path, [sys.executable, ECHO, "{listen}"]))
    made = []

    def interrupted_as_the_bridge_is_made(*argv, **kwargs):
        done = sh(*argv, **kwargs)
        if argv[:3] == ("ip", "link", "add") and argv[-2:] == ("type", "bridge"):
            made.append(argv[3])
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered at once unless held
        return done

    monkeypatch.setattr(lab.lab, "sh", interrupted_as_the_bridge_is_made)
    # Ctrl-C as a terminal gives it, however pytest was started: a shell that starts it in the
    # background without job control leaves SIGINT ignored, and then nothing would interrupt `up`
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            lab.up(config, tmp_path / "state", ready_timeout_s=30)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert made and not network.link_exists(made[0])
    assert lab.down(None, tmp_path / "state") == []


def test_a_bridge_made_by_an_ip_that_a_signal_then_killed_is_the_labs(tmp_path, monkeypatch):
    """A Ctrl-C reaches `ip` too (one process group): killed after making the bridge, it exits by the
    signal, and the bridge there is this lab's, not another lab's claim."""
    config = lab.load_lab_config(write_config(tmp_path, [sys.executable, ECHO, "{listen}"]))
    made = []

    def killed_as_it_made_the_bridge(*argv, **kwargs):
        done = sh(*argv, **kwargs)
        if argv[:3] == ("ip", "link", "add") and argv[-2:] == ("type", "bridge") and not made:
            made.append(argv[3])
            if kwargs.get("check", True):  # as `sh` answers a command that failed
                raise LabError(f"`{' '.join(argv)}` failed (exit {-signal.SIGINT})")
            return subprocess.CompletedProcess(argv, -signal.SIGINT, "", "")
        return done

    monkeypatch.setattr(lab.lab, "sh", killed_as_it_made_the_bridge)
    state = lab.up(config, tmp_path / "state", ready_timeout_s=30)
    try:
        assert state.bridge == made[0]
    finally:
        lab.down(config.name, tmp_path / "state")
    assert leftovers(state) == [] and not network.link_exists(made[0])


def test_down_after_up_was_killed(tmp_path):
    # A worker that never listens keeps `lab up` waiting; kill -9 it there, as a crash would.
    command = [sys.executable, "-c", "import time; time.sleep(120)"]
    config_path = write_config(tmp_path, command)
    name = config_path.stem
    directory = tmp_path / "state"
    env = {**os.environ, "PARTITION_LAB_STATE_DIR": str(directory), "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "partition", "lab"]
    up = subprocess.Popen([*cli, "up", "--config", str(config_path)], env=env, start_new_session=True)
    path = state_path(directory, name)
    deadline = time.monotonic() + 30
    while not (path.exists() and len(LabState.load(path).processes) == 4):
        assert time.monotonic() < deadline and up.poll() is None, "lab up did not get to starting processes"
        time.sleep(0.05)
    os.kill(up.pid, signal.SIGKILL)
    up.wait()
    state = LabState.load(path)
    assert any(processes.is_running(r) for r in state.processes)  # the crash left things running

    status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=30)
    assert f"{name}: lab number {state.index}" in status.stdout and "not written" in status.stdout
    down = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert f"removed: {name}" in down.stdout
    assert leftovers(state) == []
