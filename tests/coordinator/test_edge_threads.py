"""The coordinator runs the edge's segments with the threads the plan's edge profile was measured with."""

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
