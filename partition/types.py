"""Plain data every part shares: the vocabulary of profile -> plan -> deploy -> serve -> metrics.

A model is a list of units `[embed, block.0 .. block.{N-1}, head]` (head = final norm + LM head), so a
model with N blocks has N + 2 units. Every layer range in the project is a half-open `Segment` over
that list.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from partition.errors import ConfigError

EMBED = "embed"
BLOCK = "block"
HEAD = "head"
WEIGHT_DTYPES = ("float32", "float16", "bfloat16")  # what a segment's weights are computed in

# A device's name: it names files (its profile, its worker's log folder), metrics labels and log lines,
# so it is one plain word that no path or label can be made of: letters, digits, . _ -, not first . or -
DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_address(address: str, listening: bool = False) -> None:
    """ConfigError unless `address` is HOST:PORT (port 0, any free port, only when `listening`)."""
    host, sep, port = address.rpartition(":")
    lowest = 0 if listening else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ConfigError(f"address {address!r} is not HOST:PORT (e.g. 127.0.0.1:7001)")


def check_device_name(name: str, where: str) -> None:
    """ConfigError unless `name` is a device name (DEVICE_NAME); `where` says whose it is."""
    if not DEVICE_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: the device name {name!r} is not one plain word; use 1 to 64 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit (it names files and metrics labels)"
        )


def n_units(n_blocks: int) -> int:
    """Number of units of a model with `n_blocks` transformer blocks (embed + blocks + head)."""
    return n_blocks + 2


def unit_name(index: int, n_blocks: int) -> str:
    """`embed`, `block.i` or `head` for unit `index` of a model with `n_blocks` blocks."""
    if not 0 <= index < n_units(n_blocks):
        raise IndexError(f"unit {index} is outside 0..{n_units(n_blocks) - 1}")
    if index == 0:
        return EMBED
    if index == n_blocks + 1:
        return HEAD
    return f"{BLOCK}.{index - 1}"


def unit_kind(index: int, n_blocks: int) -> str:
    """`embed`, `block` or `head`: the kind of unit `index` (all blocks share one cost profile)."""
    return unit_name(index, n_blocks).split(".")[0]


@dataclass(frozen=True, order=True)
class Segment:
    """A half-open range `[start, end)` of units."""

    start: int  # first unit owned (inclusive)
    end: int  # one past the last unit owned

    def __post_init__(self) -> None:
        if not (isinstance(self.start, int) and isinstance(self.end, int)):
            raise TypeError(f"segment bounds must be integers, got [{self.start!r}, {self.end!r})")
        if not 0 <= self.start < self.end:
            raise ValueError(f"segment [{self.start}, {self.end}) is empty or negative")

    def __len__(self) -> int:
        return self.end - self.start

    def __contains__(self, unit: object) -> bool:
        return isinstance(unit, int) and self.start <= unit < self.end

    def __str__(self) -> str:
        return f"[{self.start},{self.end})"

    @property
    def has_embed(self) -> bool:
        return self.start == 0

    def has_head(self, n_blocks: int) -> bool:
        return self.end == n_units(n_blocks)

    def blocks(self, n_blocks: int) -> range:
        """Indices of the transformer blocks (0-based block numbers) this segment owns."""
        return range(max(self.start, 1) - 1, min(self.end, n_blocks + 1) - 1)

    def check_within(self, n_blocks: int) -> None:
        if self.end > n_units(n_blocks):
            raise ValueError(
                f"segment {self} runs past the model's {n_units(n_blocks)} units "
                f"(embed, {n_blocks} blocks, head)"
            )

    @staticmethod
    def whole(n_blocks: int) -> Segment:
        return Segment(0, n_units(n_blocks))

    @staticmethod
    def parse(text: str) -> Segment:
        """Parse `start:end` or `[start,end)`."""
        cleaned = text.strip().lstrip("[").rstrip(")")
        sep = ":" if ":" in cleaned else ","
        try:
            start, end = (int(part) for part in cleaned.split(sep))
        except ValueError:
            raise ValueError(f"cannot read a segment from {text!r}: write start:end, e.g. 0:12") from None
        return Segment(start, end)


# ---------------------------------------------------------------------------------------------------
# Profile artifacts: what `partition profile` measures on one device (profile -> plan).
# ---------------------------------------------------------------------------------------------------

# Token ids cross the cut before `embed` (the prompt in) as int32.
TOKEN_ID_BYTES = 4
# Activations between blocks travel in their raw form as fp32; codecs are described relative to it.
RAW_VALUE_BYTES = 4
# A server that holds `head` sends back the RETURN_TOP_K largest logits of the last position (token id
# int32 + logit fp32 each), not all V of them: exactly what greedy and top-k sampling (k <= K) need.
RETURN_TOP_K = 64
TOP_K_LOGITS_BYTES = RETURN_TOP_K * (TOKEN_ID_BYTES + RAW_VALUE_BYTES)

UNIT_KINDS = (EMBED, BLOCK, HEAD)


@dataclass(frozen=True)
class CodecSpec:
    """Size and speed of one activation codec, per fp32 value it is given."""

    name: str  # the name a plan writes per link (partition.codec registry name)
    bytes_per_value: float  # bytes on the wire per fp32 value (raw = 4), scales and headers included
    encode_s_per_byte: float  # seconds per raw fp32 byte to encode (on the sender)
    decode_s_per_byte: float  # seconds per raw fp32 byte to decode (on the receiver)
    lossless: bool  # decode(encode(x)) == x bit for bit
    encode_call_s: float = 0.0  # seconds per encode call regardless of size
    decode_call_s: float = 0.0  # seconds per decode call regardless of size

    def __post_init__(self) -> None:
        numbers = (self.bytes_per_value, self.encode_s_per_byte, self.decode_s_per_byte)
        numbers += (self.encode_call_s, self.decode_call_s)
        if not all(math.isfinite(x) and x >= 0 for x in numbers) or self.bytes_per_value == 0:
            raise ConfigError(f"codec {self.name!r}: sizes and times must be finite, >= 0 (bytes > 0)")

    def wire_bytes(self, raw_bytes: float) -> int:
        """Bytes on the wire for `raw_bytes` bytes of fp32 activations."""
        return math.ceil(raw_bytes * self.bytes_per_value / RAW_VALUE_BYTES)

    def codec_s(self, raw_bytes: float) -> float:
        """Seconds spent encoding plus decoding `raw_bytes` bytes of fp32 activations (0 bytes: no call)."""
        if raw_bytes <= 0:
            return 0.0
        calls = self.encode_call_s + self.decode_call_s
        return calls + raw_bytes * (self.encode_s_per_byte + self.decode_s_per_byte)


@dataclass(frozen=True)
class Fit:
    """A fitted time: `seconds = c0 + c1 * n + c2 * n**2` for a token count `n`.

    Prefill uses all three terms (attention grows with the square of the prompt); a decode step is
    linear in the context length, so its `c2` is 0.
    """

    c0: float  # seconds (fixed cost: kernel launches, reading the weights once)
    c1: float  # seconds per token
    c2: float = 0.0  # seconds per token squared

    def at(self, n: float) -> float:
        """Seconds at token count `n`."""
        return self.c0 + self.c1 * n + self.c2 * n * n


@dataclass(frozen=True)
class LayerCost:
    """Measured cost of one unit of a kind (`embed`, `block` or `head`) on one device."""

    kind: str  # embed | block | head
    prefill: Fit  # seconds to prefill one prompt, as a function of its length in tokens
    decode: Fit  # seconds of one decode step (one new token), as a function of the context length in tokens
    weight_bytes: int  # bytes of parameters one unit of this kind holds in memory
    kv_bytes_per_token: int  # bytes of KV cache per token of context per session (0 for embed and head)
    activation_bytes_per_token: (
        int  # bytes per token leaving this unit at the cut after it (fp32, or token ids)
    )
    prefill_spread: float = 0.0  # relative spread (p90 - p10) / median of the timed prefill runs
    decode_spread: float = 0.0  # relative spread (p90 - p10) / median of the timed decode steps

    def __post_init__(self) -> None:
        if self.kind not in UNIT_KINDS:
            raise ValueError(f"unit kind {self.kind!r} is not one of {', '.join(UNIT_KINDS)}")


@dataclass(frozen=True)
class DeviceIdentity:
    """What makes two timings comparable: the same machine, threads and accelerator."""

    name: str  # a label for the device (hostname or the cluster file's name)
    cpu_model: str  # e.g. "AMD EPYC 7B13" (from /proc/cpuinfo)
    threads: int  # torch intra-op threads the worker uses
    cuda_device: str | None  # e.g. "NVIDIA H100 80GB HBM3", or None on a CPU-only worker
    memory_bytes: int  # bytes of memory available to a worker when profiled


@dataclass(frozen=True)
class ModelRef:
    """The model an artifact was made for; a digest mismatch means the numbers do not apply."""

    name: str  # the name or path given to --model
    digest: str  # content digest of the model's weights (ModelSource.digest)
    n_blocks: int  # transformer blocks; the model has n_blocks + 2 units

    @property
    def n_units(self) -> int:
        return n_units(self.n_blocks)


@dataclass(frozen=True)
class DeviceProfile:
    """Per-unit costs of one model on one device (JSON artifact, cached by model, device, dtype, threads)."""

    device: DeviceIdentity
    model: ModelRef
    dtype: str  # torch dtype the worker runs, e.g. "float32"
    embed: LayerCost  # the token embedding
    block: LayerCost  # any one transformer block (all blocks share one shape, hence one cost)
    head: LayerCost  # final norm + LM head + sampling
    # The head's logits cross the network as their top K (RETURN_TOP_K): seconds per token to pick them
    # on this device when it holds the head on a server, and to rebuild the logits from them when it is
    # the edge (partition/transport/tensors.py), each after an idle pause as served. 0: not measured.
    top_k_encode_s: float = 0.0
    top_k_decode_s: float = 0.0
    # Bytes of the matrix the embedding and the head share when the model ties them: counted in both
    # units' weight_bytes, held once by a segment that has both (the whole model). 0: not tied, or
    # not recorded (an older profile: the plan then counts it twice, as before).
    tied_weight_bytes: int = 0
    # The longest prompt and the longest context the fits were timed at, in tokens: the planner's
    # figures past them are extrapolated (a prefill's quadratic term, hardly seen at a few hundred
    # tokens, can leave a long prompt's time a third short). 0: not recorded (an older profile).
    prefill_tokens_max: int = 0
    context_tokens_max: int = 0

    def cost(self, kind: str) -> LayerCost:
        """The cost of a unit of `kind` (embed, block or head)."""
        return {EMBED: self.embed, BLOCK: self.block, HEAD: self.head}[kind]

    def unit_cost(self, unit: int) -> LayerCost:
        """The cost of unit `unit` of the model (0 = embed, n_blocks + 1 = head)."""
        return self.cost(unit_kind(unit, self.model.n_blocks))


@dataclass(frozen=True)
class LinkProfile:
    """One direction of a network link between two devices."""

    src: str  # device that sends
    dst: str  # device that receives
    latency_s: float  # one-way latency in seconds
    bandwidth_Bps: float  # bytes per second


# ---------------------------------------------------------------------------------------------------
# Plan artifacts: what `partition plan` decides (plan -> deploy -> serve).
# ---------------------------------------------------------------------------------------------------


OBJECTIVES = ("latency", "throughput")


@dataclass(frozen=True)
class Pinning:
    """Units the edge keeps for itself whatever would be faster (the planner places the others)."""

    embed: bool = True  # unit 0: the prompt's token ids never leave the edge
    head: bool = False  # unit n - 1: every logit computed on the edge; else a server may return the top K

    def server_units(self, n: int) -> tuple[int, int]:
        """[lo, hi): the units a server may hold."""
        return (1 if self.embed else 0), (n - 1 if self.head else n)


DEFAULT_PINNING = Pinning()


@dataclass(frozen=True)
class Workload:
    """The request shape a plan is made for."""

    prompt_tokens: int  # P: tokens of one prompt
    new_tokens: int  # D: tokens generated per request
    sessions: int = 1  # S: sessions served at the same time
    objective: str = (
        "latency"  # latency: TTFT + (D-1) x TPOT of a request; throughput: seconds per decode round
    )

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "new_tokens", "sessions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

    @property
    def kv_tokens(self) -> int:
        """Context length the KV cache must hold per session."""
        return self.prompt_tokens + self.new_tokens


@dataclass(frozen=True)
class Stage:
    """One stage of the chain: a device running a segment of units."""

    device: str  # device name from the cluster file
    segment: Segment  # units this stage runs
    codec_out: str  # codec of what this stage sends to the next hop (raw for token ids)


@dataclass(frozen=True)
class StagePrediction:
    device: str  # device name
    segment: Segment  # units run
    prefill_s: float  # seconds to prefill the S prompts through this segment
    decode_s: float  # seconds of one decode step of the S sessions (batched) through this segment
    step_s: float  # seconds of one decode step of one session (one micro-batch) through this segment
    memory_bytes: int  # bytes of weights + KV cache for the planned context and sessions


@dataclass(frozen=True)
class LinkPrediction:
    src: str  # sending device
    dst: str  # receiving device
    cut: int  # the unit boundary the activation crosses (0 = token ids in, n_units = token ids out)
    codec: str  # codec used on this hop
    prefill_bytes: int  # bytes on the wire for the S prompts
    decode_bytes: int  # bytes on the wire per decode step (S sessions)
    prefill_s: float  # seconds for the prefill activations: encode + latency + wire + decode
    decode_s: float  # seconds per decode step (S sessions)
    step_s: float  # seconds per decode step of one session, without latency (its share of the pipeline)


@dataclass(frozen=True)
class Prediction:
    """Predicted times of a chain under a workload; every number comes from the cost model."""

    ttft_s: float  # seconds to the first token (prefill through every stage and hop)
    tpot_s: float  # seconds per later token with the S sessions batched (at the mean context reached)
    total_s: float  # seconds to the last token of a request: ttft + (D - 1) x tpot
    round_s: float  # seconds for every session to advance one token as S micro-batches (Alpa's formula)
    tokens_per_s: float  # S / round_s: the pipeline's decode throughput
    objective_s: float  # total_s for the latency objective, round_s for throughput
    stages: tuple[StagePrediction, ...]
    links: tuple[LinkPrediction, ...]


@dataclass(frozen=True)
class Baseline:
    """A split another system would use, predicted with the same cost model."""

    name: str  # one of partition.plan.baselines.BASELINES
    stages: tuple[Stage, ...]  # empty when infeasible
    predicted: Prediction | None  # None when infeasible
    infeasible: str = ""  # why this split cannot run on the cluster (empty when it can)


# MiB of KV cache a worker may preallocate unless told otherwise (partition worker --kv-budget-mb)
KV_BUDGET_MIB = 1024
# Decode steps of different sessions a worker computes as one forward at most (`partition worker
# --max-batch`): a batch reads the weights once for all its rows.
MAX_BATCH = 8
# Sessions a worker holds at once, whatever the KV budget: a segment without blocks (the embedding or
# the head alone) needs no KV cache, and the table of its slots must not grow to what a uint32 says.
# Every stage of a plan holds each of its sessions, so a plan for more cannot be deployed.
MAX_SESSIONS = 1024
EPOCH_MAX = (1 << 64) - 1  # a plan's epoch travels as a uint64 in every message to the workers


@dataclass(frozen=True)
class Plan:
    """A versioned placement: which device runs which units, in chain order from and back to the edge."""

    plan_id: str  # content hash of model, stages and workload (12 hex digits)
    epoch: int  # increases with every re-plan; stages refuse requests of another epoch
    model: ModelRef
    edge: str  # the device where prompts arrive and tokens are sampled (chain starts and ends here)
    stages: tuple[Stage, ...]  # in chain order; the edge may appear first and last
    workload: Workload
    predicted: Prediction
    baselines: tuple[Baseline, ...]
    unused: tuple[str, ...] = ()  # devices of the cluster that the plan leaves idle
    # torch threads the edge's profile was measured with: the coordinator runs the edge's segments
    # with as many, or they cost what the plan did not predict; 0 in plans that do not record it
    edge_threads: int = 0
    # a server had to save more than this fraction of the objective to be used (0: the exact optimum);
    # the servers the exact optimum used that this plan leaves out, and that optimum's objective
    min_gain: float = 0.0
    left_out: tuple[str, ...] = ()
    optimum_s: float = 0.0  # 0 when nothing was left out (then the plan is the optimum)
    # what the planner was allowed, so that a re-plan (a worker lost while serving) keeps to it: the
    # units pinned to the edge, and the codecs a hop could use (() in plans that do not record them: any)
    pin: Pinning = DEFAULT_PINNING
    codecs: tuple[str, ...] = ()
    # the sizes and speeds of `codecs` the planner used (a measured table's, or the built-in estimates);
    # () in plans that do not record them: then the built-in estimates stand in
    codec_figures: tuple[CodecSpec, ...] = ()

    def __post_init__(self) -> None:
        expected = 0
        for stage in self.stages:
            if stage.segment.start != expected:
                raise ValueError(
                    f"stage on {stage.device} starts at unit {stage.segment.start}, expected {expected}"
                )
            expected = stage.segment.end
        if expected != self.model.n_units:
            raise ValueError(
                f"stages cover units [0,{expected}) but the model has {self.model.n_units} units"
            )
        if self.edge_threads < 0:
            raise ValueError(f"edge_threads must be 0 (not recorded) or more, got {self.edge_threads}")
        if self.codec_figures and tuple(codec.name for codec in self.codec_figures) != self.codecs:
            raise ValueError(
                f"codec_figures are for {[c.name for c in self.codec_figures]}, but codecs names {list(self.codecs)}"
            )
        if not 0 <= self.min_gain < 1:
            raise ValueError(
                f"min_gain (plan --min-gain) is a fraction of the objective in [0, 1), got {self.min_gain}"
            )
