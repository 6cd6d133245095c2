"""Running the system tools the lab needs (ip, tc), with errors that name the command and its answer."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence

from partition.errors import LabError

log = logging.getLogger(__name__)


def sh(*argv: str, check: bool = True, timeout_s: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run a command; LabError with its stderr when it fails and `check` is set."""
    log.debug("run: %s", " ".join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise LabError(
            f"`{argv[0]}` is not installed (needed for: {' '.join(argv)}); install iproute2"
        ) from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv)}` did not finish in {timeout_s:.0f} s") from None
    if check and done.returncode != 0:
        raise LabError(
            f"`{' '.join(argv)}` failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return done


def quiet(*argv: str) -> bool:
    """Run a cleanup command whose failure only means there was nothing to clean; True if it succeeded."""
    return sh(*argv, check=False).returncode == 0


def netns_exec(netns: str, argv: Sequence[str]) -> list[str]:
    """argv run inside a network namespace."""
    return ["ip", "netns", "exec", netns, *argv]
