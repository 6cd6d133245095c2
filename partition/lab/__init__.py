"""The emulated lab (deploy): several unequal devices on one machine, each a worker in its own network
namespace with a bandwidth cap (tbf), a one-way delay (a user-space proxy) and a CPU limit (cgroup).

    state = up(load_lab_config("cluster/lab/wifi-edge.toml"))   # writes state.cluster_file
    down("wifi-edge")
"""

from partition.lab.config import LabConfig, LabDevice, load_lab_config, parse_lab_config
from partition.lab.lab import command_in, down, exec_in, find, up
from partition.lab.requirements import missing

__all__ = [
    "LabConfig",
    "LabDevice",
    "command_in",
    "down",
    "exec_in",
    "find",
    "load_lab_config",
    "missing",
    "parse_lab_config",
    "up",
]
