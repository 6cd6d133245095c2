"""The cluster file (plan): devices with their profiles and memory, and the links between them.

```toml
[[device]]
name = "phone"          # unique
role = "edge"           # exactly one edge: where prompts arrive and tokens are sampled
profile = "phone.json"  # a DeviceProfile, relative to this file
memory_gb = 2.0         # what a segment may use (weights + KV cache); default: the profile's memory
[[device]]
name = "gpu"
role = "server"
profile = "gpu.json"
count = 4               # optional: gpu-0 .. gpu-3, identical; links naming "gpu" apply to each
# address = "10.0.0.5:7001": where a device's worker listens (serve reads it); one device, no count
threads = 2             # optional: the worker's threads; must match the profile's
[[link]]
from = "phone"
to = "gpu"              # symmetric unless the other direction is declared too
bandwidth_mbps = 50     # megabits per second
latency_ms = 10         # one way
[[link]]
from = "gpu"
to = "gpu"              # between two different members of the group
bandwidth_mbps = 10000
latency_ms = 0.05
```
Devices without a link between them are never adjacent in a chain.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from partition.artifacts import load_profile, read_text
from partition.errors import ConfigError
from partition.types import DeviceProfile, LinkProfile, ModelRef, check_address, check_device_name

GB = 1e9  # memory sizes are decimal gigabytes, as the error messages print them
MBPS = 1e6 / 8  # bytes per second in one megabit per second

# `threads`: the worker's --threads; checked against the threads its profile was measured with
_DEVICE_KEYS = {"name", "role", "profile", "memory_gb", "count", "address", "threads"}
_LINK_KEYS = {"from", "to", "bandwidth_mbps", "latency_ms"}
_ROLES = ("edge", "server")  # one edge: where prompts arrive; servers: workers


@dataclass(frozen=True)
class Device:
    name: str  # unique name in the cluster
    role: str  # edge | server
    profile: DeviceProfile  # measured costs of the model on this device
    memory_bytes: int  # bytes a segment may use on this device (weights + KV cache)


@dataclass(frozen=True)
class Cluster:
    devices: tuple[Device, ...]  # in file order, edge included
    links: tuple[LinkProfile, ...]  # one per direction

    def __post_init__(self) -> None:
        names = [device.name for device in self.devices]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(
                f"device name(s) {', '.join(duplicates)} appear more than once; names must be unique"
            )
        for device in self.devices:  # before counting edges: a misspelt role is not a missing edge
            if device.role not in _ROLES:
                raise ConfigError(
                    f'device {device.name!r}: role must be "edge" or "server", not {device.role!r}'
                )
        check_one_edge([device.name for device in self.devices if device.role == "edge"])
        known = set(names)
        pairs = [(link.src, link.dst) for link in self.links]
        for link in self.links:
            if link.src not in known or link.dst not in known:
                raise ConfigError(f"link {link.src} -> {link.dst} names a device that is not in the cluster")
            if link.src == link.dst:
                raise ConfigError(f"link {link.src} -> {link.dst} connects a device to itself")
            if pairs.count((link.src, link.dst)) > 1:
                raise ConfigError(f"link {link.src} -> {link.dst} is declared more than once")
        models: dict[tuple[str, int], list[str]] = {}
        for device in self.devices:
            models.setdefault((device.profile.model.digest, device.profile.model.n_blocks), []).append(
                device.name
            )
        if len(models) > 1:
            raise ConfigError(
                "the profiles were measured on different models ("
                + ", ".join(
                    sorted(f"{d} with {n} blocks: {', '.join(names)}" for (d, n), names in models.items())
                )
                + "); profile every device with the same --model"
            )

    @property
    def edge(self) -> Device:
        return next(device for device in self.devices if device.role == "edge")

    @property
    def servers(self) -> tuple[Device, ...]:
        return tuple(device for device in self.devices if device.role == "server")

    @property
    def model(self) -> ModelRef:
        return self.edge.profile.model

    def device(self, name: str) -> Device:
        for device in self.devices:
            if device.name == name:
                return device
        raise ConfigError(
            f"no device called {name!r} in the cluster ({', '.join(d.name for d in self.devices)})"
        )

    def link(self, src: str, dst: str) -> LinkProfile | None:
        """The link from `src` to `dst`, or None when they are not connected."""
        return self._links.get((src, dst))

    @property
    def _links(self) -> dict[tuple[str, str], LinkProfile]:
        # Built on demand: the dataclass is frozen and small clusters make this cheap.
        cache = self.__dict__.get("_link_index")
        if cache is None:
            cache = {(link.src, link.dst): link for link in self.links}
            object.__setattr__(self, "_link_index", cache)
        return cache

    def replace_memory(self, name: str, memory_bytes: int) -> Cluster:
        """The same cluster with device `name` offering `memory_bytes`."""
        devices = tuple(
            Device(d.name, d.role, d.profile, memory_bytes) if d.name == name else d for d in self.devices
        )
        return Cluster(devices, self.links)

    def round_trip_servers(self) -> list[Device]:
        """Servers the edge can reach and that can reach the edge back, over declared links: the only
        ones a chain, which starts and ends on the edge, can use."""

        def closure(forward: bool) -> set[str]:
            seen, todo = {self.edge.name}, [self.edge.name]
            while todo:
                here = todo.pop()
                for link in self.links:
                    a, b = (link.src, link.dst) if forward else (link.dst, link.src)
                    if a == here and b not in seen:
                        seen.add(b)
                        todo.append(b)
            return seen

        both = closure(True) & closure(False)
        return [d for d in self.servers if d.name in both]

    def without(self, names: Iterable[str]) -> Cluster:
        """The cluster minus the servers `names` and their links (the edge cannot be left out)."""
        gone = set(names)
        for name in gone:
            if self.device(name).role == "edge":
                raise ConfigError(f"{name} is the edge: a cluster without it has nowhere to start")
        devices = tuple(d for d in self.devices if d.name not in gone)
        links = tuple(link for link in self.links if link.src not in gone and link.dst not in gone)
        return Cluster(devices, links)


def load_cluster(path: Path) -> Cluster:
    """Read a cluster TOML file and the device profiles it names."""
    path = Path(path)
    text = read_text(path, "cluster file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"cluster file {path} is not valid TOML: {error}") from None
    return parse_cluster(data, base_dir=path.parent, source=str(path))


def parse_cluster(data: dict, base_dir: Path, source: str = "cluster file") -> Cluster:
    unknown = set(data) - {"device", "link"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown table(s) {', '.join(sorted(unknown))}; use [[device]] and [[link]]"
        )
    entries = data.get("device", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: declare devices as [[device]] tables (name, role, profile, memory_gb)")
    profiles: dict[Path, DeviceProfile] = {}
    devices: list[Device] = []
    groups: dict[str, list[str]] = {}
    for i, entry in enumerate(entries):
        members = _parse_device(entry, f"{source}: device #{i + 1}", base_dir, profiles)
        if entry["name"] in groups:  # links name tables: a second one of that name would take them
            raise ConfigError(
                f"{source}: device #{i + 1}: the name {entry['name']!r} is already a [[device]]; names are unique"
            )
        groups[entry["name"]] = [device.name for device in members]
        devices.extend(members)
    links = _parse_links(data.get("link", []), source, groups)
    try:
        return Cluster(tuple(devices), links)
    except ConfigError as error:  # what the devices say together: named with the file they are in
        raise ConfigError(f"{source}: {error}") from None


def check_one_edge(edges: list[str], where: str = "") -> None:
    """`edges`: the names of the devices with role = "edge"; a cluster has exactly one."""
    if len(edges) != 1:
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f'{prefix}a cluster needs exactly one device with role = "edge", found {len(edges)}'
            + (f" ({', '.join(edges)})" if edges else "")
        )


def check_device_table(entry: object, where: str, default_role: str | None = None) -> tuple[str, str]:
    """The rules every reader of a [[device]] table applies: known keys, a name, a valid role.

    Returns (name, role); `default_role` stands for a missing role (None: role is required)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a [[device]] table")
    named = f"{where} ({entry['name']!r})" if isinstance(entry.get("name"), str) else where
    unknown = set(entry) - _DEVICE_KEYS
    if unknown:  # before a missing name: the name itself may be the misspelt key
        raise ConfigError(
            f"{named}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_DEVICE_KEYS))}"
        )
    name = _require(entry, "name", str, where)
    check_device_name(name, where)
    where = named
    role = entry.get("role", default_role) if default_role else _require(entry, "role", str, where)
    if role not in _ROLES:
        raise ConfigError(f'{where}: role must be "edge" or "server", not {role!r}')
    return name, role


def check_device_address(address: object, where: str) -> None:
    """ConfigError unless a [[device]]'s `address` is "host:port" (its worker's --listen)."""
    try:
        if not isinstance(address, str):
            raise ConfigError(f"address {address!r} is not a string")
        check_address(address)
    except ConfigError as error:
        raise ConfigError(
            f'{where}: address must be "host:port" where its `partition worker --listen` listens ({error})'
        ) from None


def _parse_device(
    entry: object, where: str, base_dir: Path, profiles: dict[Path, DeviceProfile]
) -> list[Device]:
    name, role = check_device_table(entry, where)
    where = f"{where} ({name!r})"
    if "address" in entry:  # serve reads it from this same file: a plan made from it must be servable
        check_device_address(entry["address"], where)
    if "profile" not in entry:
        hint = (
            "; with workers running, `partition profile --cluster FILE --model MODEL` profiles every device"
            if "address" in entry
            else ""
        )
        raise ConfigError(f'{where}: needs profile = "FILE.json" made by `partition profile`{hint}')
    profile_path = base_dir / _require(entry, "profile", str, where)
    if profile_path not in profiles:
        try:
            profiles[profile_path] = load_profile(profile_path)
        except ConfigError as error:
            missing = not profile_path.exists()
            advice = (
                f"; make it with `partition profile --model MODEL --name {name} --out {profile_path}` on that device"
                if missing
                else ""
            )
            raise ConfigError(f"{where}: {error}{advice}") from None
    profile = profiles[profile_path]
    threads = entry.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"{where}: threads must be a whole number >= 1, got {threads!r}")
    if "threads" in entry and entry["threads"] != profile.device.threads:
        raise ConfigError(
            f"{where}: runs {entry['threads']!r} thread(s) but {profile_path.name} was measured with "
            f"{profile.device.threads}; profile it again with --threads {entry['threads']}"
        )
    if "memory_gb" in entry:
        memory_gb = _number(entry, "memory_gb", where)
        if not 1 <= memory_gb * GB < math.inf:
            raise ConfigError(
                f"{where}: memory_gb = {memory_gb:g} is no device's memory; give it in GB, e.g. 8"
            )
        memory = int(memory_gb * GB)
    elif profile.device.memory_bytes == 0:  # how a profile says it could not read the memory available
        raise ConfigError(
            f"{where}: {profile_path.name} records no memory available (it was measured where none could be "
            "read); give this device's memory_gb"
        )
    else:
        memory = profile.device.memory_bytes
    count = entry.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"{where}: count must be a positive integer, got {count!r}")
    if count > 1 and role == "edge":
        raise ConfigError(f"{where}: the edge is one device; drop count")
    if count > 1 and "address" in entry:  # its members are name-0, name-1, ...: one address serves none
        raise ConfigError(
            f"{where}: {count} devices cannot share one address; declare each as its own [[device]] with "
            "its worker's address"
        )
    names = [name] if count == 1 else [f"{name}-{i}" for i in range(count)]
    return [Device(member, role, profile, memory) for member in names]


def _parse_links(entries: object, source: str, groups: dict[str, list[str]]) -> tuple[LinkProfile, ...]:
    if not isinstance(entries, list):
        raise ConfigError(
            f"{source}: declare links as [[link]] tables (from, to, bandwidth_mbps, latency_ms)"
        )
    declared: dict[tuple[str, str], LinkProfile] = {}
    for i, entry in enumerate(entries):
        where = f"{source}: link #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a [[link]] table")
        unknown = set(entry) - _LINK_KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_LINK_KEYS))}"
            )
        src, dst = _require(entry, "from", str, where), _require(entry, "to", str, where)
        for end in (src, dst):
            if end not in groups:
                raise ConfigError(f"{where}: no device called {end!r}; devices: {', '.join(groups)}")
        if src == dst and len(groups[src]) == 1:
            raise ConfigError(f"{where}: link {src} -> {dst} connects a device to itself")
        bandwidth = _number(entry, "bandwidth_mbps", where) * MBPS
        latency = _number(entry, "latency_ms", where, allow_zero=True) / 1e3
        if (src, dst) in declared:
            raise ConfigError(f"{where}: link {src} -> {dst} is declared twice")
        declared[(src, dst)] = LinkProfile(src, dst, latency, bandwidth)
    links: dict[tuple[str, str], LinkProfile] = {}
    for (src, dst), link in declared.items():
        # The reverse direction copies this one unless it was declared itself.
        directions = [(src, dst)] if (dst, src) in declared else [(src, dst), (dst, src)]
        for a, b in directions:
            for member_a in groups[a]:
                for member_b in groups[b]:
                    if member_a != member_b:
                        links[(member_a, member_b)] = LinkProfile(
                            member_a, member_b, link.latency_s, link.bandwidth_Bps
                        )
    return tuple(links.values())


def _require(entry: dict, key: str, tp: type, where: str):
    if key not in entry:
        raise ConfigError(f"{where}: missing {key} = ...")
    value = entry[key]
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: {key} must be a {tp.__name__}, got {value!r}")
    return value


def _number(entry: dict, key: str, where: str, allow_zero: bool = False) -> float:
    if key not in entry:
        raise ConfigError(f"{where}: missing {key} = ...")
    value = entry[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{where}: {key} must be a {kind} number, got {value!r}")
    return float(value)
