"""Lab configs and the cluster file they produce (pure: no root needed)."""

import tomllib
from pathlib import Path

import pytest

from partition.errors import ConfigError
from partition.lab import load_lab_config, parse_lab_config
from partition.lab.cluster_file import UNSHAPED_MBPS, render
from partition.lab.config import pair_link

CONFIGS = Path(__file__).parents[2] / "cluster" / "lab"


def test_shipped_configs_say_what_the_issue_asks():
    wifi = load_lab_config(CONFIGS / "wifi-edge.toml")
    edge = wifi.edge
    assert (edge.name, edge.cpu, edge.bandwidth_mbps, edge.delay_ms) == ("edge", 0.25, 50, 10)
    server = wifi.device("server-a")
    assert pair_link(edge, server) == (50, 10)  # edge <-> server
    assert pair_link(server, wifi.device("server-b")) == (None, 0)  # the rack is unshaped
    for name, mbps, ms in (("lan", 1000, 0.5), ("wan", 10, 40)):
        config = load_lab_config(CONFIGS / f"{name}.toml")
        assert config.name == name
        for a in config.devices:
            for b in config.devices:
                if a is not b:
                    assert pair_link(a, b) == (mbps, ms)


def test_worker_command_is_data():
    config = load_lab_config(CONFIGS / "wifi-edge.toml")
    argv = config.render_command(config.edge, "127.0.0.1")
    assert argv[1:] == [
        "-m",
        "partition",
        "worker",
        "--listen",
        "127.0.0.1:7001",
        "--name",
        "edge",
        "--threads",
        "1",
    ]


def minimal(**device) -> dict:
    return {"lab": {"name": "t"}, "device": [{"name": "edge", "role": "edge", **device}]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "missing the \\[lab\\] table"),
        ({"lab": {"name": "Bad Name"}, "device": []}, "name must be lowercase"),
        ({"lab": {"name": "t\n"}, "device": []}, "name must be lowercase.*got 't\\\\n'"),
        (
            {"lab": {"name": "t"}, "device": [{"name": "edge\n", "role": "edge"}]},
            "name must be lowercase.*got 'edge\\\\n'",
        ),
        ({"lab": {"name": "t"}}, "no \\[\\[device\\]\\]"),
        (minimal(cpu=0), "cpu must be a number in 0.01..1024, got 0"),
        (minimal(threads=1.5), "threads must be an integer"),
        (minimal(bandwidth_mbps="fast"), "bandwidth_mbps must be a number"),
        (minimal(ram=4), "unknown keys \\['ram'\\]"),
        (
            {"lab": {"name": "t"}, "device": [{"name": "a", "role": "server"}]},
            "exactly one device must have role",
        ),
        (
            {"lab": {"name": "t"}, "device": [{"name": "a", "role": "edge"}, {"name": "a"}]},
            "device names must be unique",
        ),
        (
            {"lab": {"name": "t", "worker_command": ["run", "{gpu}"]}, "device": []},
            "field \\{gpu\\} is unknown",
        ),
        ({**minimal(), "lab": {"name": "t", "prot": 7301}}, "\\[lab\\]: unknown keys \\['prot'\\]"),
        ({**minimal(), "extra": {"a": 1}}, "unknown top-level tables or keys \\['extra'\\]"),
        ({"lab": {"name": "t"}, "device": ["edge"]}, "device must be an array of tables"),
        (
            {**minimal(), "lab": {"name": "t", "worker_command": ["{python}", "-c", "print({)"]}},
            "worker_command part 'print\\(\\{\\)' is not a valid template",
        ),
        (
            {**minimal(), "lab": {"name": "t", "worker_command": ["{listen!z}"]}},
            "worker_command part '\\{listen!z\\}' cannot be filled in",
        ),
    ],
)
def test_bad_configs_are_refused_precisely(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_lab_config(data, "t.toml")


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="No such file or directory; shipped configs are in cluster/lab/"):
        load_lab_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot read lab config .*: Is a directory; shipped configs"):
        load_lab_config(tmp_path)  # a folder, as tab completion leaves cluster/lab/
    broken = tmp_path / "broken.toml"
    broken.write_text("[lab\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_lab_config(broken)


def test_cluster_file_lists_devices_and_pair_links():
    config = load_lab_config(CONFIGS / "wifi-edge.toml")
    addresses = {"edge": "10.213.0.10:7001", "server-a": "10.213.0.11:7001", "server-b": "10.213.0.12:7001"}
    cluster = tomllib.loads(render(config, addresses))
    assert [(d["name"], d["role"], d["address"]) for d in cluster["device"]] == [
        ("edge", "edge", "10.213.0.10:7001"),
        ("server-a", "server", "10.213.0.11:7001"),
        ("server-b", "server", "10.213.0.12:7001"),
    ]
    assert cluster["device"][0]["memory_gb"] == 1.0
    links = {
        (link["from"], link["to"]): (link["bandwidth_mbps"], link["latency_ms"]) for link in cluster["link"]
    }
    assert links == {
        ("edge", "server-a"): (50, 10.0),
        ("edge", "server-b"): (50, 10.0),
        ("server-a", "server-b"): (UNSHAPED_MBPS, 0.0),
    }
