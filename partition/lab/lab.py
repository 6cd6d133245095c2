"""Bring an emulated lab up and down (deploy): namespaces, links, shaping, cgroups, workers, delay proxies.

Per device: a namespace `plab<N>-<device>` on bridge `pl<N>br` (subnet 10.213.<N>.0/24, the host is .1),
tbf on both ends of its veth, a cpu cgroup when it has a CPU limit, the worker listening on the
namespace's own 127.0.0.1:<port>, and the delay proxy on <device ip>:<port> in front of it, so every
connection to the worker pays the pair's one-way delay. N is the first lab number free on this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import partition
from partition.errors import LabError
from partition.lab import cgroup, cluster_file, network, processes
from partition.lab.config import LabConfig, LabDevice, pair_link
from partition.lab.listening import wait_for
from partition.lab.requirements import require
from partition.lab.state import LabState, lab_command, list_states, state_dir, state_path
from partition.lab.system import sh

log = logging.getLogger(__name__)

SUBNET = "10.213"  # 10.213.<lab number>.0/24
MAX_LABS = 64
READY_TIMEOUT_S = 60.0  # seconds for every worker to accept connections
DEFAULT_CLUSTER_FILE = "cluster.toml"  # in the lab's run directory, unless `up` is given another path


def _names(index: int, position: int, device: LabDevice) -> dict[str, str]:
    # Interface names have at most 15 characters: keep them short, and the long names for namespaces.
    return {
        "netns": f"plab{index}-{device.name}",
        "host_end": f"pl{index}h{position}",
        "device_end": f"pl{index}d{position}",
        "cgroup": f"plab{index}-{device.name}",
        "ip": f"{SUBNET}.{index}.{10 + position}",
    }


def _subnet_taken(index: int) -> bool:
    prefix = f"{SUBNET}.{index}."
    routes = sh("ip", "-4", "route", "show", "table", "all", check=False).stdout
    addresses = sh("ip", "-4", "-o", "addr", "show", check=False).stdout
    return prefix in routes or prefix in addresses


def _index_in_use(index: int, taken: set[int]) -> bool:
    namespaces = sh("ip", "netns", "list", check=False).stdout.split()
    return (
        index in taken
        or network.link_exists(f"pl{index}br")
        or any(name.startswith(f"plab{index}-") for name in namespaces)
        or _subnet_taken(index)
    )


def _claim_bridge(state: LabState, taken: set[int]) -> None:
    """Create the first free `pl<N>br`; creating it is the claim, so two labs never share N."""
    for index in range(MAX_LABS):
        if _index_in_use(index, taken):
            continue
        bridge = f"pl{index}br"
        # It cannot be recorded before it is made (a number another lab took would be removed with
        # ours): a Ctrl-C between the two waits until it is recorded, so that `down` finds it.
        with _interrupts_held():
            made = sh("ip", "link", "add", bridge, "type", "bridge", check=False)
            if made.returncode != 0:
                there = network.link_exists(bridge)
                if there and made.returncode > 0:
                    continue  # another lab took this number a moment ago
                if not there:
                    raise LabError(
                        f"`ip link add {bridge} type bridge` failed (exit {made.returncode}): {made.stderr.strip()}"
                    )
                # else `ip` made it, then a signal killed it (a Ctrl-C reaches the whole process group)
            state.index, state.bridge, state.bridge_ip = index, bridge, f"{SUBNET}.{index}.1"
            state.save()
        network.bridge_configure(bridge, f"{state.bridge_ip}/24")
        return
    raise LabError(f"no free lab number below {MAX_LABS}: `partition lab down` the labs you no longer need")


@contextlib.contextmanager
def _interrupts_held():
    """SIGINT, SIGTERM and SIGHUP wait until the block ends, then act as they would have. Only the main
    thread runs signal handlers, and can hold them (a signal mask would not: another thread takes it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {number: signal.signal(number, lambda number, _frame: caught.append(number)) for number in held}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(caught):  # each once, in order: one ignored must not hide the next
            signal.raise_signal(number)


def child_env() -> dict[str, str]:
    # Workers and proxies import this very package, installed or not.
    root = str(Path(partition.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    # `lab exec -- partition ...` finds the `partition` installed next to this interpreter (a venv's bin),
    # also under sudo, whose PATH leaves it out.
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", os.defpath)) if p)
    return env


def _proxy_argv(
    config: LabConfig, device: LabDevice, ips: dict[str, str], host_ip: str, wait_s: float
) -> list[str]:
    argv = [sys.executable, "-m", "partition.lab.proxy", "--listen", f"{ips[device.name]}:{config.port}"]
    argv += ["--target", f"127.0.0.1:{config.port}", "--delay-ms", f"{device.delay_ms:g}"]
    # The proxy listens only once its worker does: it waits as long as `lab up` waits (str: %g would round).
    argv += ["--wait-s", str(wait_s)]
    for other in config.devices:
        delay = 0.0 if other is device else pair_link(device, other)[1]
        argv += ["--peer-delay-ms", f"{ips[other.name]}={delay:g}"]
    # The host, where serve and bench usually run, counts as the edge.
    host_delay = 0.0 if device is config.edge else pair_link(device, config.edge)[1]
    argv += ["--peer-delay-ms", f"{host_ip}={host_delay:g}"]
    return argv


def _wait_ready(state: LabState, config: LabConfig, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for device in config.devices:
        address = (state.devices[device.name]["ip"], config.port)
        records = [r for r in state.processes if r.device == device.name]
        while not wait_for(address, 0.2):
            dead = [r for r in records if not processes.is_running(r)]
            if dead:
                record = dead[0]
                raise LabError(
                    f"the {record.kind} of {device.name} exited during `lab up` "
                    f"({' '.join(record.argv)}); last lines of {record.log}:\n{processes.log_tail(record)}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"{device.name} does not accept connections at {address[0]}:{address[1]} after "
                    f"{timeout_s:g} s; see {records[0].log if records else 'its log'}"
                )


def up(
    config: LabConfig,
    directory: str | Path | None = None,
    cluster_out: str | Path | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> LabState:
    """Bring the lab up and write its cluster file; on any failure, undo everything made so far."""
    require(config)
    directory = state_dir(directory)
    path = state_path(directory, config.name)
    if path.exists():
        down_command = lab_command(directory, f"down --name {config.name}")
        raise LabError(f"lab {config.name!r} is already up (state {path}); run `{down_command}`")
    state = LabState(name=config.name, path=path, config=config.source)
    taken = {other.index for other in list_states(directory)}
    try:
        _claim_bridge(state, taken)
        _build(state, config)
        _launch(state, config, ready_timeout_s)
        _wait_ready(state, config, ready_timeout_s)
        out = Path(cluster_out) if cluster_out else state.run_dir / DEFAULT_CLUSTER_FILE
        addresses = {name: info["address"] for name, info in state.devices.items()}
        cluster_file.write(out, config, addresses)
        state.cluster_file = str(out)
        state.save()
    except BaseException:
        log.warning("lab up failed; removing what it made")
        down_state(state)
        raise
    return state


def _build(state: LabState, config: LabConfig) -> None:
    for position, device in enumerate(config.devices):
        names = _names(state.index, position, device)
        state.devices[device.name] = {
            "ip": names["ip"],
            "address": f"{names['ip']}:{config.port}",
            "netns": names["netns"],
            "role": device.role,
            "cgroup": "",
        }
        state.netns.append(names["netns"])  # recorded first: the lab number is ours, so are these names
        state.links.append(names["host_end"])
        state.save()
        network.namespace_add(names["netns"])
        network.veth_to_bridge(
            names["host_end"], names["device_end"], names["netns"], state.bridge, f"{names['ip']}/24"
        )
        if device.bandwidth_mbps is not None:
            network.shape(names["host_end"], names["device_end"], names["netns"], device.bandwidth_mbps)
        if device.cpu is not None:
            group = cgroup.CPU_ROOT / names["cgroup"]
            state.cgroups.append(str(group))
            state.devices[device.name]["cgroup"] = str(group)
            state.save()
            cgroup.create(names["cgroup"], device.cpu)


def _launch(state: LabState, config: LabConfig, ready_timeout_s: float) -> None:
    env = child_env()
    ips = {name: info["ip"] for name, info in state.devices.items()}
    for device in config.devices:
        info = state.devices[device.name]
        group = Path(info["cgroup"]) if info["cgroup"] else None
        worker = processes.start(
            config.render_command(device, "127.0.0.1"),
            device=device.name,
            kind="worker",
            log=state.run_dir / f"{device.name}.log",
            netns=info["netns"],
            cgroup=group,
            env=env,
        )
        state.processes.append(worker)
        state.save()
        # The proxy is infrastructure, not the device: it runs in the namespace but outside the CPU limit.
        proxy = processes.start(
            _proxy_argv(config, device, ips, state.bridge_ip, ready_timeout_s),
            device=device.name,
            kind="proxy",
            log=state.run_dir / f"{device.name}.proxy.log",
            netns=info["netns"],
            env=env,
        )
        state.processes.append(proxy)
        state.save()


def down_state(state: LabState) -> list[str]:
    """Remove everything the state names (missing pieces are fine); returns what could not be removed."""
    problems = []
    for record in reversed(state.processes):
        try:
            processes.stop(record)
        except LabError as error:
            problems.append(str(error))
    for netns in state.netns:
        # Anything still in a namespace we created is ours (a worker's child, say).
        for pid in network.namespace_pids(netns):
            processes.kill_pid(pid)
        network.delete_namespace(netns)
    for link in state.links:
        if network.link_exists(link):
            network.delete_link(link)
    if state.bridge and network.link_exists(state.bridge):
        network.delete_link(state.bridge)
    for group in state.cgroups:
        path = Path(group)
        for pid in cgroup.pids(path):
            processes.kill_pid(pid)
        try:
            cgroup.remove(path)
        except LabError as error:
            problems.append(str(error))
    leftovers = [n for n in state.netns if network.namespace_exists(n)]
    leftovers += [link for link in [*state.links, state.bridge] if link and network.link_exists(link)]
    problems += [f"still present: {item}" for item in leftovers]
    if not problems:
        # Its cluster file names addresses that are gone now; the logs stay, to read after the fact. A
        # cluster file written elsewhere (--out) is the user's to keep.
        (state.run_dir / DEFAULT_CLUSTER_FILE).unlink(missing_ok=True)
        state.path.unlink(missing_ok=True)
        state.path.with_suffix(".tmp").unlink(missing_ok=True)
    return problems


def down(name: str | None = None, directory: str | Path | None = None) -> list[str]:
    """Bring down lab `name` (default: every lab in the state directory); returns the names brought down."""
    directory = state_dir(directory)
    states = list_states(directory)
    if name is not None:
        states = [s for s in states if s.name == name]
        if not states:
            raise LabError(f"no lab {name!r} is up; {_labs_up(directory)}")
    if states and os.geteuid() != 0:  # killing its processes and removing its namespaces would fail midway
        raise LabError(
            f"lab down needs root, as lab up did: {', '.join(s.name for s in states)} has processes, namespaces "
            "and cgroups that only root may remove (run it with sudo); nothing was removed"
        )
    problems = []
    for state in states:
        problems += down_state(state)
    if problems:
        raise LabError("lab down left things behind:\n  - " + "\n  - ".join(problems))
    return [state.name for state in states]


def find(name: str | None, directory: str | Path | None = None) -> LabState:
    """The lab called `name`, or the only lab up when no name is given."""
    directory = state_dir(directory)
    states = list_states(directory)
    if name is not None:
        states = [s for s in states if s.name == name]
    if name is not None and not states:
        raise LabError(f"no lab {name!r} is up; {_labs_up(directory)}")
    if not states:
        raise LabError(f"no lab is up here ({directory})")
    if len(states) > 1:
        raise LabError(f"name the lab with --name ({_labs_up(directory)})")
    return states[0]


def _labs_up(directory: Path) -> str:
    names = [state.name for state in list_states(directory)]
    return f"labs up: {', '.join(names)}" if names else f"none is up in {directory}"


def command_in(state: LabState, device: str | None, argv: Sequence[str], cpu_limit: bool = True) -> list[str]:
    """argv wrapped to run inside a device (default: the edge), with its CPU limit unless told otherwise."""
    if not argv:
        raise LabError("nothing to run: give the command after --")
    device = device or _edge_name(state)
    if device not in state.devices:
        raise LabError(f"lab {state.name!r} has no device {device!r}; devices: {', '.join(state.devices)}")
    info = state.devices[device]
    command = network.netns_exec(info["netns"], argv)
    if cpu_limit and info["cgroup"]:
        command = cgroup.wrap(Path(info["cgroup"]), command)
    return command


def exec_in(state: LabState, device: str | None, argv: Sequence[str], cpu_limit: bool = True) -> int:
    """Run a command inside a device and wait for it; returns its exit code, 128 + N if signal N ended it."""
    code = subprocess.run(command_in(state, device, argv, cpu_limit), env=child_env(), check=False).returncode
    return 128 - code if code < 0 else code  # the shell's convention: 137 for SIGKILL


def _edge_name(state: LabState) -> str:
    return next(name for name, info in state.devices.items() if info["role"] == "edge")
