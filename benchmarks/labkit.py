"""The user's path through an emulated lab, one `partition` command per step (deploy -> serve -> metrics),
shared by the lab benchmarks (lab_prediction.py, plan_quality.py, lab_codecs.py).

Every step is the command a user would type, printed before it runs; its output goes to a log file in
the run's directory (shown in full when the step fails). The lab lives in a state directory of its own,
so a lab someone else brought up on this machine (a test run's) is never touched, and it is always
brought down, by name, when the block ends.

    with lab_up(Path("cluster/lab/wifi-edge.toml"), workdir) as lab:
        cluster = profile(lab, "smollm2-135m", workdir)
        plan_path = make_plan("smollm2-135m", cluster, workdir / "plan.json", Workload(40, 32))
        report = bench(lab, plan_path, cluster, workdir / "bench.json", requests=5)
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# The demo's workload and profiling points (anew each run, around that workload): the benchmarks
# measure what `make demo` shows.
from partition.demo import NEW_TOKENS, PROFILE_POINTS, PROMPT_TOKENS

REPO = Path(__file__).resolve().parents[1]
LAB_CONFIGS = {name: REPO / "cluster" / "lab" / f"{name}.toml" for name in ("wifi-edge", "lan", "wan")}
STATE_DIR = Path("/run/partition-lab-bench")  # ours alone: `lab down` here never meets another lab
MODEL = "smollm2-135m"


class StepError(RuntimeError):
    """A `partition` step exited with an error; the message carries its log's tail."""


@dataclass(frozen=True)
class Lab:
    name: str  # the lab's name ([lab] name in its config)
    config: Path  # cluster/lab/NAME.toml
    cluster: Path  # the cluster file `lab up` wrote (devices and their workers' addresses)
    workdir: Path  # logs and artifacts of this run
    edge_threads: int  # torch threads of the edge device: the coordinator runs there with as many
    state_dir: Path = STATE_DIR


def partition_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "partition", *args]


def shown(argv: Sequence[str]) -> str:
    if list(argv[:3]) == partition_argv():
        argv = ["partition", *argv[3:]]
    return " ".join(shlex.quote(str(a)) for a in argv)


def step(argv: Sequence[str], log: Path, quiet: bool = False) -> str:
    """Run one command, its output into `log`; returns that output, or raises StepError with its tail."""
    if not quiet:
        print(f"  $ {shown(argv)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run([str(a) for a in argv], text=True, capture_output=True, check=False)
    output = result.stdout + result.stderr
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(
        f"$ {shown(argv)}\n{output}\n(exit {result.returncode}, {time.perf_counter() - started:.1f} s)\n"
    )
    if result.returncode != 0:
        raise StepError(f"`{shown(argv)}` failed with exit code {result.returncode}:\n{output[-3000:]}")
    return output


@contextlib.contextmanager
def lab_up(config: Path, workdir: Path, state_dir: Path = STATE_DIR) -> Iterator[Lab]:
    """Bring the lab of `config` up in `state_dir`; always bring it down (by name) afterwards."""
    from partition.lab import load_lab_config

    lab_config = load_lab_config(config)
    workdir.mkdir(parents=True, exist_ok=True)
    # The lab's own profile cache (the workers started by `lab up` inherit it); `profile` refreshes it,
    # so every run plans from what the devices measure now, not from a busier or quieter hour.
    os.environ["PARTITION_CACHE_DIR"] = str((workdir / "profile-cache").resolve())
    cluster = workdir / "lab-cluster.toml"
    base = partition_argv("lab", "--state-dir", str(state_dir))
    step([*base, "up", "--config", str(config), "--out", str(cluster)], workdir / "lab-up.log")
    try:
        yield Lab(lab_config.name, config, cluster, workdir, lab_config.edge.threads or 1, state_dir)
    finally:
        step([*base, "down", "--name", lab_config.name], workdir / "lab-down.log")


def in_edge(lab: Lab, argv: Sequence[str]) -> list[str]:
    """argv run inside the lab's edge device: its namespace (links) and CPU quota."""
    return [
        *partition_argv("lab", "--state-dir", str(lab.state_dir), "exec", "--name", lab.name, "--"),
        *argv,
    ]


def profile(lab: Lab, model: str, out_dir: Path, extra: Sequence[str] = ()) -> Path:
    """Profile every device through its worker and every link; returns the profiled cluster file."""
    out = out_dir / "cluster.toml"
    argv = partition_argv("profile", "--cluster", str(lab.cluster), "--model", model, "--out", str(out))
    argv += [*PROFILE_POINTS, *extra]
    step(argv, out_dir / "profile.log")
    return out


def make_plan(model: str, cluster: Path, out: Path, extra: Sequence[str] = ()) -> Path:
    argv = partition_argv("plan", "--model", model, "--cluster", str(cluster), "--out", str(out))
    argv += ["--prompt-tokens", str(PROMPT_TOKENS), "--new-tokens", str(NEW_TOKENS), *extra]
    step(argv, out.with_suffix(".log"))
    return out


def bench(
    lab: Lab,
    plan: Path,
    cluster: Path,
    json_out: Path,
    requests: int,
    baseline: str | None = None,
    extra: Sequence[str] = (),
) -> dict:
    """`partition bench` run inside the edge (the coordinator runs the edge's segments); its JSON report."""
    argv = partition_argv("bench", "--plan", str(plan), "--cluster", str(cluster))
    argv += ["--requests", str(requests), "--threads", str(lab.edge_threads), "--json", str(json_out)]
    if baseline:
        argv += ["--baseline", baseline]
    step(in_edge(lab, [*argv, *extra]), json_out.with_suffix(".log"))
    return json.loads(json_out.read_text())


def comparison(report: dict, name: str) -> dict:
    """One predicted-vs-measured row of a bench report (TTFT, TPOT, "stage ...", "link ...")."""
    return next(row for row in report["predicted_vs_measured"] if row["name"] == name)


def stages_text(stages: Sequence[Sequence]) -> str:
    """[["edge", 0, 1, "raw"], ...] -> "edge[0,1) server-a[1,31) edge[31,32)"."""
    return " ".join(f"{device}[{start},{end})" for device, start, end, *_ in stages)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])
