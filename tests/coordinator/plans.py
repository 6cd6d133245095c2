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
