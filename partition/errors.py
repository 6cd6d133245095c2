"""Exception types raised at the project's edges. Each message says what went wrong and what to do.

The CLI turns any `PartitionError` into one line on stderr and exit code 2 (no traceback).
"""


class PartitionError(Exception):
    """Base class: a user-facing error with an actionable message."""


class ModelNotFoundError(PartitionError):
    """A model name or path that does not resolve to a readable model."""


class UnsupportedModelError(PartitionError):
    """A model whose architecture, tensor type or layout we cannot run."""


class ContextOverflowError(PartitionError):
    """A prompt (plus requested tokens) longer than the model's or cache's context."""


class ConfigError(PartitionError):
    """A malformed cluster file, plan file or command-line value."""


class CodecError(PartitionError):
    """Activation bytes that a codec cannot encode or decode (wrong size, corrupt, unknown codec)."""


class SpanLogError(PartitionError):
    """A span log file that is not ours, from an incompatible version, or corrupt."""


class LabError(PartitionError):
    """The emulated lab cannot be brought up or down (missing privilege, tool or kernel feature, a failed step)."""


class InfeasiblePlanError(PartitionError):
    """No split of the model fits the cluster; the message names the constraint and the shortfall."""


class StoppedError(PartitionError):
    """A request cut off because serve stopped while it was under way (its deployment closed under it)."""
