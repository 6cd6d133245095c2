"""Processes of the emulated lab: started inside a device's namespace (and cgroup), stopped by id.

A process is recorded with its start time (from /proc) next to its pid, so a later `lab down` never
signals an unrelated process that happens to reuse the pid after a crash or a reboot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from partition.errors import LabError
from partition.lab.cgroup import wrap as cgroup_wrap
from partition.lab.system import netns_exec


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_ticks: int  # process start time in clock ticks since boot (/proc/PID/stat field 22)
    device: str
    kind: str  # "worker" or "proxy"
    argv: tuple[str, ...]
    log: str  # path of its stdout + stderr

    def as_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: Mapping) -> ProcessRecord:
        return ProcessRecord(**{**data, "argv": tuple(data["argv"])})


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of a process, or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may contain spaces
    return fields[0], int(fields[19])


def is_running(record: ProcessRecord) -> bool:
    """The very process we started is still alive (zombies count as gone)."""
    stat = _stat(record.pid)
    return stat is not None and stat[1] == record.start_ticks and stat[0] not in ("Z", "X")


def start(
    argv: Sequence[str],
    *,
    device: str,
    kind: str,
    log: Path,
    netns: str | None = None,
    cgroup: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ProcessRecord:
    """Start `argv` in its own session, inside `netns` and `cgroup` when given, output to `log`."""
    command = list(argv)
    if netns:
        command = netns_exec(netns, command)
    if cgroup:
        command = cgroup_wrap(cgroup, command)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:  # this run's output only: a failed `up` shows its own last lines
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a group, not by our Ctrl-C
                env=dict(env) if env is not None else None,
            )
        except OSError as error:
            raise LabError(f"cannot start {kind} of {device} ({' '.join(argv)}): {error}") from None
    stat = _stat(process.pid)
    ticks = stat[1] if stat else 0
    return ProcessRecord(process.pid, ticks, device, kind, tuple(argv), str(log))


def stop(record: ProcessRecord, timeout_s: float = 5.0) -> None:
    """SIGTERM the process group we started, SIGKILL after `timeout_s`; nothing if it is gone already."""
    if not is_running(record):
        return
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(record.pid, sig)  # the group's id is the pid: start_new_session
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(record.pid)
            if not is_running(record):
                return
            time.sleep(0.02)
    raise LabError(f"{record.kind} of {record.device} (pid {record.pid}) survived SIGKILL")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child (a later `lab down`): init reaps it
        os.waitpid(pid, os.WNOHANG)


def kill_pid(pid: int) -> None:
    """SIGKILL one process known to be ours (it lives in a namespace or cgroup we created)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(pid)


def log_tail(record: ProcessRecord, lines: int = 15) -> str:
    try:
        text = Path(record.log).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
