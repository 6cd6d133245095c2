"""Without root or cgroups, the lab says exactly what is missing (checked by pretending, no root needed)."""

import pytest

from partition.errors import LabError
from partition.lab import parse_lab_config
from partition.lab import requirements as req


def config(cpu):
    device = {"name": "edge", "role": "edge", **({"cpu": cpu} if cpu else {})}
    return parse_lab_config({"lab": {"name": "t"}, "device": [device]})


def test_names_root_and_the_cgroup_controller(monkeypatch, tmp_path):
    monkeypatch.setattr(req.os, "geteuid", lambda: 1000)
    gaps = req.missing(config(cpu=0.25), cpu_root=tmp_path / "cpu")
    assert any(gap.startswith("root:") for gap in gaps)
    assert any("cgroup v1 cpu controller" in gap and "mount -t cgroup -o cpu" in gap for gap in gaps)


def test_a_cgroup_v2_host_is_told_to_drop_cpu_not_to_mount_v1(monkeypatch, tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")  # v2 at the root
    gaps = req.missing(config(cpu=0.25), cpu_root=tmp_path / "cpu")
    (gap,) = [gap for gap in gaps if "cgroup" in gap]
    assert "is cgroup v2, which the lab does not drive yet; drop `cpu =`" in gap and "mount" not in gap


def test_no_cgroup_needed_without_cpu_limits(monkeypatch, tmp_path):
    monkeypatch.setattr(req.os, "geteuid", lambda: 0)
    monkeypatch.setattr(req.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    assert req.missing(config(cpu=None), cpu_root=tmp_path / "cpu") == []


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(req.shutil, "which", lambda tool: None)
    gaps = req.missing(config(cpu=None))
    assert "the `ip` command (install iproute2)" in gaps and "the `tc` command (install iproute2)" in gaps


def test_require_lists_every_gap(monkeypatch):
    monkeypatch.setattr(
        req, "missing", lambda config=None: ["root: ...", "the `tc` command (install iproute2)"]
    )
    with pytest.raises(LabError, match="(?s)cannot run on this machine; missing:.*root.*`tc`"):
        req.require()
