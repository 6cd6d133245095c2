"""CPU limits of emulated devices: a short CFS period, so a limited device is slow rather than bursty."""

import pytest

from partition.lab import cgroup


@pytest.mark.parametrize(
    ("cores", "period", "quota"),
    [(0.25, 4000, 1000), (0.5, 4000, 2000), (2.0, 4000, 8000), (0.1, 10000, 1000), (0.05, 20000, 1000)],
)
def test_the_period_is_the_shortest_with_a_valid_quota(tmp_path, cores, period, quota):
    path = cgroup.create("device", cores, root=tmp_path)
    assert int((path / "cpu.cfs_period_us").read_text()) == period == cgroup.period_us(cores)
    assert int((path / "cpu.cfs_quota_us").read_text()) == quota
    assert quota / period == pytest.approx(cores)
