"""Real profiles of this machine, measured once per test session into a temporary cache.

The server is this machine as it is (one thread); the edge is this machine inside a cgroup v1 CPU
quota of EDGE_CORES (REFERENCES.md: the cpu controller works here and we are root). Where cgroups
cannot be used, the edge is the server's profile with every time multiplied by 1 / EDGE_CORES, and
`edge_profile.emulated` says so.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import pytest

from partition.profile import ProfileSettings

EDGE_CORES = 0.3  # CPU time per second the edge may use
# Short lengths and few repeats keep the session fast; a sample spans >= 0.1 s so quotas show.
SETTINGS = ProfileSettings(
    prefill_lengths=(8, 32), context_lengths=(8, 64), repeats=2, warmup=1, min_time_s=0.1
)


@dataclasses.dataclass(frozen=True)
class Measured:
    profile: object  # DeviceProfile
    emulated: str  # "" for a real measurement, else how it was derived


@pytest.fixture(scope="session")
def profile_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("profiles")


@pytest.fixture(scope="session")
def server_profile(profile_dir):
    from partition.profile import profile_device

    return profile_device("smollm2-135m", SETTINGS, threads=1, name="server", cache_dir=profile_dir)


@pytest.fixture(scope="session")
def edge_profile(profile_dir, server_profile) -> Measured:
    """The edge: this machine's profile measured by a thread inside a CPU-quota cgroup.

    cgroup v1 places threads, and with one torch thread the model runs on the calling thread, so
    moving only the profiling thread throttles exactly the measured work (and not torch's import).
    """
    from partition.errors import LabError
    from partition.lab import cgroup
    from partition.profile import profile_device

    try:
        group = cgroup.create(f"partition-test-edge-{os.getpid()}", EDGE_CORES)
    except (LabError, OSError) as error:
        return Measured(_scaled(server_profile, 1 / EDGE_CORES), f"scaled by {1 / EDGE_CORES:g} ({error})")
    result: dict = {}

    def measure() -> None:
        tid = str(threading.get_native_id())
        try:
            (group / "tasks").write_text(tid)
            result["profile"] = profile_device(
                "smollm2-135m", SETTINGS, threads=1, name="edge", cache_dir=profile_dir
            )
        except BaseException as error:  # handed to the test thread below
            result["error"] = error
        finally:
            (group.parent / "tasks").write_text(tid)  # back to the root group before the thread ends

    worker = threading.Thread(target=measure)
    worker.start()
    worker.join()
    cgroup.remove(group)
    if "error" in result:
        raise result["error"]
    return Measured(result["profile"], "")


def _scaled(profile, factor: float):
    """The profile with every time multiplied by `factor` (the fallback when cgroups are unavailable)."""
    from partition.types import Fit

    def slower(cost):
        scale = lambda f: Fit(f.c0 * factor, f.c1 * factor, f.c2 * factor)  # noqa: E731
        return dataclasses.replace(cost, prefill=scale(cost.prefill), decode=scale(cost.decode))

    device = dataclasses.replace(profile.device, name="edge")
    return dataclasses.replace(
        profile,
        device=device,
        embed=slower(profile.embed),
        block=slower(profile.block),
        head=slower(profile.head),
    )
