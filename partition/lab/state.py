"""The lab's state file (deploy, emulated lab): everything `lab up` made, written before or right after
each step, so `lab down` can undo a lab whose `up` crashed half-way.

Kept under /run/partition-lab (tmpfs: gone after a reboot, like the namespaces it describes);
PARTITION_LAB_STATE_DIR or --state-dir moves it.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from partition.errors import LabError
from partition.lab.processes import ProcessRecord

DEFAULT_STATE_DIR = Path("/run/partition-lab")


def _chosen(explicit: str | Path | None) -> tuple[Path, str]:
    """(the state directory, where it was chosen): --state-dir, else PARTITION_LAB_STATE_DIR, else default."""
    if explicit:
        return Path(explicit), "--state-dir"
    environment = os.environ.get("PARTITION_LAB_STATE_DIR")
    if environment:
        return Path(environment), "PARTITION_LAB_STATE_DIR"
    return DEFAULT_STATE_DIR, "the default"


def state_dir(explicit: str | Path | None = None) -> Path:
    path, origin = _chosen(explicit)
    if path.exists() and not path.is_dir():
        raise LabError(
            f"the lab state directory {path} (from {origin}) is a file, not a directory; "
            "point --state-dir at a directory"
        )
    return path


def lab_command(directory: Path, action: str) -> str:
    """`partition lab ACTION` as the user must type it to reach the labs in `directory`."""
    if Path(directory) == _chosen(None)[0]:
        return f"partition lab {action}"
    return f"partition lab --state-dir {shlex.quote(str(directory))} {action}"


@dataclass
class LabState:
    """What one lab made. Mutable on purpose: it grows step by step and is saved after each."""

    name: str
    path: Path  # the state file
    index: int = -1  # lab number on this machine: names and subnet derive from it
    config: str = ""  # the lab config it came from
    bridge: str = ""
    bridge_ip: str = ""
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # host-side veth names
    cgroups: list[str] = field(default_factory=list)  # directories
    processes: list[ProcessRecord] = field(default_factory=list)
    devices: dict[str, dict] = field(default_factory=dict)  # name -> {"ip", "address", "netns", "cgroup"}
    cluster_file: str = ""

    @property
    def run_dir(self) -> Path:
        """Logs of this lab's processes."""
        return self.path.with_suffix("")

    def save(self) -> None:
        data = {key: value for key, value in vars(self).items() if key != "path"}
        data["processes"] = [record.as_dict() for record in self.processes]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2))
        temporary.replace(self.path)  # atomic: a crash leaves the old or the new state, never half

    @staticmethod
    def load(path: Path) -> LabState:
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("it is not a JSON object")
            data["processes"] = [ProcessRecord.from_dict(p) for p in data["processes"]]
            state = LabState(path=path, **data)
            # each field as save writes it: a file edited by hand must not fail later, halfway through down
            for name, kind in (("netns", list), ("links", list), ("cgroups", list), ("devices", dict)):
                if not isinstance(getattr(state, name), kind):
                    raise ValueError(f"{name} is not a {kind.__name__}")
            return state
        except KeyError as error:
            said = f"{error.args[0]!r} is missing"
        except (OSError, ValueError, TypeError, AttributeError) as error:
            said = str(error)
        raise LabError(f"cannot read the lab state file {path}: {said}; remove it after cleaning by hand")


def state_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def list_states(directory: Path) -> list[LabState]:
    if not directory.is_dir():
        return []
    return [LabState.load(path) for path in sorted(directory.glob("*.json"))]
