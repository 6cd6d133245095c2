"""Plans with a chosen split, for tests: real model digest, predictions from synthetic profiles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from partition.plan.synthetic import chosen_split_plan
from partition.types import ModelRef, Plan, Segment, Stage, Workload

EDGE = "phone"


def split_plan(source, stages: list[tuple[str, int, int, str]], epoch: int = 1, edge: str = EDGE) -> Plan:
    """stages: (device, start, end, codec_out) in chain order; every non-edge device is a server."""
    model = ModelRef(source.name, source.digest, source.spec.n_blocks)
    chain = tuple(Stage(device, Segment(start, end), codec) for device, start, end, codec in stages)
    plan = chosen_split_plan(model, chain, Workload(prompt_tokens=32, new_tokens=48), edge)
    return replace(plan, epoch=epoch)


def served_by_one_worker(source, tmp_path: Path, address: str) -> tuple[Plan, Path, Path]:
    """The plan phone [0,16) -> server-a [16,32) (raw, server-a holds the head) and a cluster file giving
    server-a's address, both written into `tmp_path`: (plan, plan file, cluster file)."""
    from partition.artifacts import save_plan

    plan = split_plan(source, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
    save_plan(plan, tmp_path / "plan.json")
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(f'[[device]]\nname = "server-a"\nrole = "server"\naddress = "{address}"\n')
    return plan, tmp_path / "plan.json", cluster


def with_edge_only_baseline(source) -> Plan:
    """phone [0,16) -> server-a [16,32), with one feasible baseline: edge_only (the whole model on phone)."""
    from partition.types import Baseline

    plan = split_plan(source, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
    edge_only = split_plan(source, [("phone", 0, 32, "raw")])
    return replace(plan, baselines=(Baseline("edge_only", edge_only.stages, edge_only.predicted),))


def profiled_cluster(source, folder: Path, addresses: dict[str, str], memory_gb: dict[str, float]) -> Path:
    """A cluster file as `partition profile` writes it, from synthetic profiles of the real model: the
    phone (edge, a quarter of this CPU's speed) and each server of `memory_gb` at its address, every
    pair linked at 1 Gbit/s, 0.5 ms. Returns the file's path."""
    from partition.artifacts import save_profile
    from partition.plan.synthetic import synthetic_profile

    model = ModelRef(source.name, source.digest, source.spec.n_blocks)
    speeds = {EDGE: 0.25} | {name: 1.0 for name in memory_gb}
    lines = []
    for name, speed in speeds.items():
        save_profile(synthetic_profile(name, speed=speed, model=model), folder / f"{name}.json")
        role = "edge" if name == EDGE else "server"
        lines += ["[[device]]", f'name = "{name}"', f'role = "{role}"', f'profile = "{name}.json"']
        lines += [f"memory_gb = {memory_gb.get(name, 8.0)}", "threads = 1"]
        lines += [f'address = "{addresses[name]}"'] if name in addresses else []
    for a in speeds:
        for b in speeds:
            if a != b:
                lines += ["[[link]]", f'from = "{a}"', f'to = "{b}"', "bandwidth_mbps = 1000"]
                lines += ["latency_ms = 0.5"]
    path = folder / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
