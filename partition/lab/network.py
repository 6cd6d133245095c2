"""The lab's network (deploy, emulated lab): a bridge on the host, one namespace per device joined to it
by a veth pair, and tbf on both ends of the pair to cap the device's bandwidth in each direction.

Measured on this machine: tbf at 50 Mbit/s carried 47.8 Mbit/s of TCP payload (headers take the rest).
"""

from __future__ import annotations

from partition.lab.system import netns_exec, quiet, sh

MTU = 1500  # bytes


def bridge_configure(name: str, ip_cidr: str) -> None:
    """Give an existing bridge the host's address in the lab subnet and bring it up."""
    sh("ip", "addr", "add", ip_cidr, "dev", name)
    sh("ip", "link", "set", name, "up")


def namespace_add(netns: str) -> None:
    sh("ip", "netns", "add", netns)
    sh(*netns_exec(netns, ["ip", "link", "set", "lo", "up"]))


def veth_to_bridge(host_end: str, device_end: str, netns: str, bridge: str, ip_cidr: str) -> None:
    """A veth pair: `host_end` on the bridge, `device_end` in `netns` with address `ip_cidr`."""
    sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", device_end)
    sh("ip", "link", "set", device_end, "netns", netns)
    sh("ip", "link", "set", host_end, "master", bridge)
    sh("ip", "link", "set", host_end, "up")
    sh(*netns_exec(netns, ["ip", "addr", "add", ip_cidr, "dev", device_end]))
    sh(*netns_exec(netns, ["ip", "link", "set", device_end, "up"]))


def tbf_args(rate_mbps: float) -> list[str]:
    """tbf parameters for a rate: a bucket of 1 ms of traffic (at least 2 packets) and a 50 ms queue.

    A small bucket keeps single messages honest (an activation of a few KB pays its transfer time
    instead of passing in one burst); the queue bounds bufferbloat.
    """
    rate_bytes_s = rate_mbps * 1e6 / 8
    burst = max(2 * MTU + 100, round(rate_bytes_s * 1e-3))
    limit = max(4 * burst, round(rate_bytes_s * 0.05))
    return ["rate", f"{rate_mbps}mbit", "burst", str(burst), "limit", str(limit)]


def shape(host_end: str, device_end: str, netns: str, rate_mbps: float) -> None:
    """Cap both directions: host_end's egress is the device's download, device_end's its upload."""
    sh("tc", "qdisc", "add", "dev", host_end, "root", "tbf", *tbf_args(rate_mbps))
    sh(*netns_exec(netns, ["tc", "qdisc", "add", "dev", device_end, "root", "tbf", *tbf_args(rate_mbps)]))


def namespace_pids(netns: str) -> list[int]:
    done = sh("ip", "netns", "pids", netns, check=False)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def namespace_exists(netns: str) -> bool:
    return netns in sh("ip", "netns", "list").stdout.split()


def link_exists(name: str) -> bool:
    return quiet("ip", "link", "show", "dev", name)


def delete_namespace(netns: str) -> None:
    quiet("ip", "netns", "del", netns)


def delete_link(name: str) -> None:
    quiet("ip", "link", "del", name)
