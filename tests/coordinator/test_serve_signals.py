"""`partition serve --spawn-local` stopped by a signal (a job scheduler's SIGTERM, a closed terminal's
SIGHUP, Ctrl-C's SIGINT): it stops the workers it started and says what stopped it, instead of leaving
them to init. Killed with SIGKILL, it runs nothing more, and the workers stop by themselves once their
stdin pipe closes."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from partition.artifacts import save_plan
from tests.coordinator.plans import split_plan


def _gone(pid: int, within_s: float) -> bool:
    """True once `pid` has exited (a zombie not yet reaped by init counts as exited)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _serve_until_a_worker_starts(smollm2, tmp_path) -> tuple[subprocess.Popen, int]:
    """serve --spawn-local of a two-stage plan, streaming a long answer; it and its worker's pid."""
    plan = split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
    save_plan(plan, tmp_path / "plan.json")
    serve = subprocess.Popen(
        [sys.executable, "-m", "partition", "-v", "serve", "--plan", str(tmp_path / "plan.json"),
         "--spawn-local", "--threads", "1", "--prompt", "Once upon a time", "--max-new-tokens", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in serve.stderr:  # INFO: "started local worker server-a at ADDRESS (pid N)"
        if found := re.search(r"started local worker server-a at \S+ \(pid (\d+)\)", line):
            return serve, int(found.group(1))
    serve.kill()
    serve.wait()
    raise AssertionError("serve did not say which worker it started")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_mid_answer_stops_the_workers_serve_started(smollm2, tmp_path, signum):
    serve, worker_pid = _serve_until_a_worker_starts(smollm2, tmp_path)
    try:
        assert serve.stdout.read(1), "the answer did not start streaming"
        serve.send_signal(signum)
        _, err = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        if not _gone(worker_pid, 0):
            os.kill(worker_pid, signal.SIGKILL)  # the test failed; do not leave the worker behind
    assert serve.returncode == 128 + signum, err[-3000:]
    assert f"stopped by {signal.Signals(signum).name}" in err and "Traceback" not in err, err[-3000:]
    assert _gone(worker_pid, 10), "the worker serve started outlived it"


def test_serve_killed_outright_leaves_no_worker_running(smollm2, tmp_path):
    serve, worker_pid = _serve_until_a_worker_starts(smollm2, tmp_path)
    # its log folder: serve, killed, cannot remove it
    arguments = Path(f"/proc/{worker_pid}/cmdline").read_text().split("\0")
    log_folder = Path(arguments[arguments.index("--ready-file") + 1]).parent
    try:
        assert serve.stdout.read(1), "the answer did not start streaming"
        serve.kill()
        serve.wait()
        assert _gone(worker_pid, 30), "the worker outlived serve killed with SIGKILL"
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        if not _gone(worker_pid, 0):
            os.kill(worker_pid, signal.SIGKILL)
        shutil.rmtree(log_folder, ignore_errors=True)
