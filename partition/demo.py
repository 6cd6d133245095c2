"""The whole story on the embedded default model (profile -> plan -> deploy -> serve -> metrics).

Brings up the `wifi-edge` lab (a weak edge at a quarter of a core behind 50 Mbit/s and 10 ms, two
servers), profiles every device through its worker, plans, answers the chat question through the
split from inside the edge, and benchmarks it; then takes the lab down. Where this machine cannot run
the lab (no root, no network namespaces or cgroups), it says what is missing and runs the same steps
with local worker processes and no emulation. Every step is a `partition` command, printed before it
runs, so the demo doubles as a tutorial.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from partition.errors import PartitionError

log = logging.getLogger(__name__)

QUESTION = "What is the capital of France?"
LAB_CONFIG = Path(__file__).resolve().parents[1] / "cluster" / "lab" / "wifi-edge.toml"
# Profiling points around the demo's workload (a 40-token prompt, 32 new tokens: contexts 40 to 72),
# measured anew each run (--refresh, about a minute): a profile cached in a busier or quieter hour of
# a shared machine predicts another speed than the one the bench then measures. Five repeats: with
# three, one slow sample moved a point's median and the decode fit made it a slope per context token.
# benchmarks/labkit.py profiles the labs with these same points.
PROFILE_POINTS = [
    "--prefill-lengths", "16", "40", "64", "--context-lengths", "16", "40", "72", "128", "--repeats", "5", "--refresh",
]  # fmt: skip
PROMPT_TOKENS, NEW_TOKENS = 40, 32  # the workload planned for: a short chat turn
WORKLOAD = ["--prompt-tokens", str(PROMPT_TOKENS), "--new-tokens", str(NEW_TOKENS)]


class DemoError(PartitionError):
    """A demo step failed; its own output says why."""


def partition_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "partition", *args]


def step(title: str, argv: list[str], capture: bool = False) -> str:
    shown = " ".join(
        shlex.quote(a) for a in (["partition", *argv[3:]] if argv[:3] == partition_command() else argv)
    )
    print(f"\n== {title}\n$ {shown}", flush=True)
    result = subprocess.run(argv, text=True, capture_output=capture)
    if result.returncode != 0:
        if capture:
            sys.stderr.write(result.stderr)
        raise DemoError(f"step '{title}' failed with exit code {result.returncode}")
    if capture:
        print(result.stdout, end="", flush=True)
    return result.stdout if capture else ""


def lab_missing() -> list[str]:
    from partition.lab.config import load_lab_config
    from partition.lab.requirements import missing

    return missing(load_lab_config(LAB_CONFIG))


def run_demo(model: str, workdir: Path | None = None, use_lab: bool = True) -> int:
    workdir = Path(workdir or tempfile.mkdtemp(prefix="partition-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    missing = lab_missing() if use_lab else ["--no-lab was given"]
    if missing:
        print(f"The emulated lab cannot run here ({'; '.join(missing)}).")
        print("Running the same steps with local worker processes and no network or CPU emulation.")
        return _demo_local(model, workdir)
    return _demo_lab(model, workdir)


def _story(model: str, cluster: Path, workdir: Path, inside_edge: list[str]) -> None:
    profiled = workdir / "cluster.toml"
    plan = workdir / "plan.json"
    step(
        "profile every device through its worker, measure every link",
        partition_command(
            "profile", "--cluster", str(cluster), "--model", model, "--out", str(profiled), *PROFILE_POINTS
        ),
        capture=True,
    )
    step(
        "plan the split",
        partition_command(
            "plan", "--model", model, "--cluster", str(profiled), "--out", str(plan), *WORKLOAD
        ),
    )
    step(
        "serve the chat question through the split",
        inside_edge
        + partition_command(
            "serve", "--plan", str(plan), "--cluster", str(profiled), "--chat", "--prompt", QUESTION
        ),
    )
    step(
        "benchmark the split: metrics, and every stage and link beside its prediction",
        inside_edge
        + partition_command(
            "bench", "--plan", str(plan), "--cluster", str(profiled), "--requests", "3",
            "--json", str(workdir / "bench.json"), "--plot", str(workdir / "timeline.png"),
        ),
    )  # fmt: skip
    print(f"\nArtifacts (profiles, plan, bench JSON, timeline) are in {workdir}")


def _demo_lab(model: str, workdir: Path) -> int:
    cluster = workdir / "lab-cluster.toml"
    step(
        "bring up the wifi-edge lab",
        partition_command("lab", "up", "--config", str(LAB_CONFIG), "--out", str(cluster)),
    )
    try:
        # The coordinator runs on the edge: inside its namespace and CPU quota.
        _story(model, cluster, workdir, inside_edge=partition_command("lab", "exec", "--"))
    finally:
        step("take the lab down", partition_command("lab", "down"))
    return 0


def _demo_local(model: str, workdir: Path) -> int:
    from partition.transport.local import spawn_workers, stop_workers

    workers = spawn_workers(["server-a", "server-b"], extra_args=("--threads", "1"))
    try:
        for worker in workers:
            print(f"started worker {worker.name} at {worker.address} (pid {worker.pid})")
        cluster = workdir / "local-cluster.toml"
        entries = ['[[device]]\nname = "edge"\nrole = "edge"\nmemory_gb = 1.0\n']
        entries += [
            f'[[device]]\nname = "{w.name}"\nrole = "server"\naddress = "{w.address}"\nmemory_gb = 8.0\n'
            for w in workers
        ]
        cluster.write_text("\n".join(entries))
        _story(model, cluster, workdir, inside_edge=[])
    finally:
        stop_workers(workers)
    return 0
