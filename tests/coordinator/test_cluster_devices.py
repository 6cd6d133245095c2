"""serve, bench and profile --cluster read a cluster file of addresses with the planner's rules: a
misspelt key, role or address is named, not silently dropped."""

import subprocess
import sys

import pytest

from partition.coordinator.cluster_devices import read_devices
from partition.coordinator.workers import cluster_addresses
from partition.errors import ConfigError

EDGE = '[[device]]\nname = "phone"\nrole = "edge"\n'


def write(tmp_path, body: str):
    path = tmp_path / "cluster.toml"
    path.write_text(EDGE + body)
    return path


def test_a_file_of_addresses_reads_without_profiles(tmp_path):
    path = write(tmp_path, '[[device]]\nname = "server-a"\naddress = "127.0.0.1:7001"\nthreads = 2\n')
    devices = read_devices(path)
    assert [(d.name, d.role, d.address, d.threads) for d in devices] == [
        ("phone", "edge", None, None),
        ("server-a", "server", "127.0.0.1:7001", 2),  # a missing role means a server here
    ]
    assert cluster_addresses(path) == {"server-a": "127.0.0.1:7001"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[[device]]\nname = "server-a"\nrole = "server"\nadress = "127.0.0.1:7001"\n',
            r"device #2 \('server-a'\): unknown key\(s\) adress; known: address, count",
        ),
        (
            '[[device]]\nname = "server-a"\nrole = "sever"\n',
            """role must be "edge" or "server", not 'sever'""",
        ),
        (
            '[[device]]\nname = "phone"\nrole = "server"\naddress = "h:1"\n',
            "another device is called 'phone'",
        ),
        ('[[device]]\nname = "server-a"\naddress = "127.0.0.1"\n', 'address must be "host:port"'),
        ('[[device]]\nname = "server-a"\naddress = "127.0.0.1:99999"\n', 'address must be "host:port"'),
        ('[[device]]\nname = "server-a"\naddress = 7001\n', 'address must be "host:port"'),
        ('[[device]]\nname = "server-a"\naddress = "h:1"\nthreads = 0\n', "threads must be a whole number"),
        ('[[device]]\naddress = "h:1"\n', "missing name"),
        ("[[device]]\n]", "not valid TOML"),
    ],
)
def test_mistakes_in_a_file_of_addresses_are_named(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        cluster_addresses(write(tmp_path, body))


def test_serve_names_a_misspelt_key_before_deploying(smollm2, tmp_path):
    from partition.artifacts import save_plan
    from tests.coordinator.plans import split_plan

    save_plan(
        split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")]), tmp_path / "plan.json"
    )
    cluster = write(tmp_path, '[[device]]\nname = "server-a"\nrole = "server"\nadress = "127.0.0.1:7001"\n')
    result = subprocess.run(
        [sys.executable, "-m", "partition", "serve", "--plan", str(tmp_path / "plan.json"), "--cluster",
         str(cluster), "--prompt", "hi"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "unknown key(s) adress" in result.stderr  # before: "no address for device(s) server-a"
