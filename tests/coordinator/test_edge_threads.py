"""The coordinator runs the edge's segments with the threads the plan's edge costs were measured with."""

import dataclasses

import pytest

from partition.artifacts import save_profile
from partition.coordinator.workers import edge_threads
from partition.plan.synthetic import synthetic_profile

SERVER = '[[device]]\nname = "server-a"\nrole = "server"\nthreads = 4\naddress = "127.0.0.1:7001"\n'


@pytest.mark.parametrize(
    ("edge_entry", "expected"),
    [
        ('threads = 1\nprofile = "phone.json"\n', 1),  # declared: it wins
        ('profile = "phone.json"\n', 3),  # else the profile's own threads
        ('profile = "missing.json"\n', None),  # an unreadable profile says nothing
        ("", None),
    ],
)
def test_edge_threads_come_from_the_edge_entry_or_its_profile(tmp_path, edge_entry, expected):
    profile = synthetic_profile("phone")
    profile = dataclasses.replace(profile, device=dataclasses.replace(profile.device, threads=3))
    save_profile(profile, tmp_path / "phone.json")
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(f'[[device]]\nname = "phone"\nrole = "edge"\n{edge_entry}\n{SERVER}')
    assert edge_threads(cluster) == expected


@pytest.fixture
def restore_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("flag", "recorded", "declared", "expected"),
    [
        (2, 1, 4, 2),  # --threads overrides
        (0, 1, 4, 1),  # else what the plan's edge costs were measured with
        (0, 0, 4, 4),  # a plan that does not record it: the cluster file
    ],
)
def test_serve_runs_the_edge_with_the_threads_the_plan_was_measured_with(
    tmp_path, restore_threads, flag, recorded, declared, expected
):
    import argparse

    import torch

    from partition.cli.serve import use_edge_threads
    from partition.plan import make_plan
    from partition.plan.synthetic import star_cluster
    from partition.types import Workload

    cluster = star_cluster(
        synthetic_profile("phone"), 2.0, [("gpu", synthetic_profile("gpu"), 16.0)], (200, 5)
    )
    plan = dataclasses.replace(make_plan(cluster, Workload(16, 4)), edge_threads=recorded)
    cluster_file = tmp_path / "cluster.toml"
    cluster_file.write_text(f'[[device]]\nname = "phone"\nrole = "edge"\nthreads = {declared}\n{SERVER}')
    torch.set_num_threads(3)
    use_edge_threads(argparse.Namespace(threads=flag, cluster=cluster_file), plan)
    assert torch.get_num_threads() == expected
