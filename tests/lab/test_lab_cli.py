"""`partition lab` as a user types it, with a state directory of its own: the hints it prints, status,
exec and down. Needs root, like the rest of the lab; skipped with the exact reason elsewhere."""

import subprocess
import sys
from pathlib import Path

import pytest

from partition import lab
from partition.lab import processes
from partition.lab.requirements import missing
from partition.lab.state import LabState, state_path
from tests.lab.test_lab_up_down import ECHO, leftovers, write_config

pytestmark = [pytest.mark.lab, pytest.mark.skipif(bool(missing()), reason="; ".join(missing()))]

# The PATH of `sudo`: the interpreter's own bin (a venv's) is not on it.
SUDO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def partition_lab(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "partition", "lab", "--state-dir", str(directory), *args],
        env={"PATH": SUDO_PATH},
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_lab_cli_from_up_to_down(tmp_path):
    config_path = write_config(tmp_path, [sys.executable, ECHO, "{listen}"])
    name = config_path.stem
    directory = tmp_path / "state"
    out = tmp_path / "cluster.toml"
    up = partition_lab(
        directory, "up", "--config", str(config_path), "--out", str(out), "--ready-timeout", "30"
    )
    assert up.returncode == 0, up.stderr
    state = LabState.load(state_path(directory, name))
    try:
        assert f"partition lab --state-dir {directory} exec -- partition serve" in up.stdout
        assert f"remove: partition lab --state-dir {directory} down --name {name}" in up.stdout

        again = partition_lab(directory, "up", "--config", str(config_path))
        assert f"run `partition lab --state-dir {directory} down --name {name}`" in again.stderr

        # The documented `lab exec -- partition ...` works with the PATH of sudo.
        help_text = partition_lab(directory, "exec", "--", "partition", "--help")
        assert help_text.returncode == 0 and "usage: partition" in help_text.stdout, help_text.stderr

        killed = partition_lab(directory, "exec", "--", "sh", "-c", "kill -9 $$")
        assert killed.returncode == 137

        unknown = partition_lab(directory, "exec", "--name", "nope", "--", "true")
        assert f"no lab 'nope' is up; labs up: {name}" in unknown.stderr

        proxy = next(r for r in state.processes if r.kind == "proxy" and r.device == "edge")
        processes.stop(proxy)
        status = partition_lab(directory, "status")
        assert f"3/4 processes running; not running: proxy of edge (log {proxy.log})" in status.stdout

        down = partition_lab(directory, "down")
        assert down.returncode == 0 and f"removed: {name}" in down.stdout, down.stderr
    finally:
        if state.path.exists():
            lab.down(name, directory)
    assert leftovers(state) == []
    assert out.exists()  # written with --out: the user's file, kept
