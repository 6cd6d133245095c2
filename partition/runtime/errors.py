"""Why a stage refuses a request (serve). Each type maps to one gRPC status in partition/transport/status.py.

The runtime raises these without knowing about gRPC; the servicers turn them into statuses whose
message is the exception's text, so every message says what was wrong and what to do.
"""

from __future__ import annotations

from partition.errors import PartitionError

# What a worker says when it holds no segment (it was just started or restarted). A coordinator that
# finds these words loads the worker again (partition/coordinator/resume.py): part of the contract.
NOTHING_LOADED = "no segment is loaded on this worker"
# What a worker says to a request for another plan than the one it serves. A coordinator that finds
# these words, not having re-planned itself, names another deployment as having taken the worker.
SERVES_ANOTHER_PLAN = "but this worker serves plan"
# What a worker says to a LoadSegment meant for another device name: the plan's worker is not at that
# address any more. A coordinator that re-plans around lost workers does so on these words.
NOT_THIS_WORKER = "another worker serves at this address"


class InvalidRequestError(PartitionError):
    """A malformed message: garbage bytes, a missing field, a value out of its range (INVALID_ARGUMENT)."""


class ModelAccessError(PartitionError):
    """A model path outside the worker's --models-dir (PERMISSION_DENIED)."""


class StaleDeploymentError(PartitionError):
    """A request for another plan, epoch or model than the one loaded, or none loaded (FAILED_PRECONDITION)."""


class WrongWorkerError(StaleDeploymentError):
    """A LoadSegment for another device name than this worker's (FAILED_PRECONDITION); nothing changed."""


class PositionError(PartitionError):
    """A step at another position than the session's next one, or past its context (OUT_OF_RANGE)."""


class CapacityError(PartitionError):
    """No free KV slot, or a memory budget too small for the request (RESOURCE_EXHAUSTED)."""


class UnknownSessionError(PartitionError):
    """A step or stream for a session this worker does not hold (never opened, ended, expired) (NOT_FOUND)."""
