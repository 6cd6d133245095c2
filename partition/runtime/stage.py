"""The stage runtime (deploy + serve): one loaded segment, its KV cache, and checked steps.

Every method runs in the worker's compute lane (partition/runtime/compute.py: one call at a time, in
arrival order), so loads, steps and session changes never interleave and need no locks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from partition.runtime.errors import (
    NOTHING_LOADED,
    SERVES_ANOTHER_PLAN,
    CapacityError,
    InvalidRequestError,
    StaleDeploymentError,
)
from partition.runtime.models_dir import resolve_allowed
from partition.runtime.sessions import Session, SessionTable
from partition.types import KV_BUDGET_MIB, MAX_BATCH, MAX_SESSIONS, Segment

log = logging.getLogger(__name__)

DTYPES = {"": torch.float32, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_MAX_CONTEXT = 2048  # tokens per session when LoadSegment leaves max_context at 0


@dataclass(frozen=True)
class WorkerSettings:
    name: str  # --name: how errors, timings and replies identify this worker
    models_dir: Path | None = None  # the only directory model paths may point into
    device: str = "cpu"  # torch device for the segment and its KV cache
    kv_budget_bytes: int = KV_BUDGET_MIB << 20  # bytes of KV cache this worker may preallocate
    idle_timeout_s: float = 600.0  # seconds without a step before a session's slot is freed
    default_sessions: int = 8  # KV slots when LoadSegment asks for "as many as fit" (capped by the budget)
    max_batch: int = MAX_BATCH  # sessions' decode steps computed as one forward at most (1: alone)


@dataclass(frozen=True)
class Deployment:
    """What LoadSegment asked for: checked against every session and step."""

    plan_id: str
    epoch: int
    model: str  # as named in the request
    model_digest: str  # of the worker's copy
    segment: Segment
    dtype: str  # key of DTYPES
    downstream: str  # host:port of the next stage; "" for the last stage
    codec_out: str  # partition.codec name for outputs
    max_context: int  # tokens per session
    max_sessions: int  # as requested (0 = as many as the budget allows)
    chain_workers: int = 1  # workers in the plan's chain, this one included (a decode batch's share)


@dataclass(frozen=True)
class LoadResult:
    deployment: Deployment
    model_name: str
    weights_digest: str
    n_blocks: int  # of the whole model
    hidden_size: int
    vocab_size: int
    kv_slots: int
    weight_bytes: int
    kv_bytes: int
    load_s: float  # seconds; 0 when the request was already satisfied
    device: str
    dropped_sessions: tuple[str, ...] = field(default=())  # sessions of the previous deployment
    units_kept: int = 0  # units taken from the segment loaded before, not read again


@dataclass
class _Loaded:
    deployment: Deployment
    result: LoadResult
    model: torch.nn.Module  # partition.model.SegmentModel
    cache: object  # partition.model.KVCache
    sessions: SessionTable


class StageRuntime:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._loaded: _Loaded | None = None

    # -- deploy ---------------------------------------------------------------------------------------

    @property
    def deployment(self) -> Deployment | None:
        return self._loaded.deployment if self._loaded else None

    @property
    def returns_logits(self) -> bool:
        """Whether the loaded segment ends with the head (its outputs are logits)."""
        return self._loaded is not None and self._loaded.model.returns_logits

    @property
    def vocab_size(self) -> int:
        """Width of the loaded model's logits (0 when nothing is loaded)."""
        return self._loaded.result.vocab_size if self._loaded is not None else 0

    def load(self, wanted: Deployment, expected_digest: str = "") -> LoadResult:
        """Load `wanted.segment` of `wanted.model`, or answer at once if it is already loaded."""
        from partition.codec import get_codec
        from partition.model import load_segment

        _check_request(wanted)
        get_codec(wanted.codec_out)  # unknown codec: ConfigError before any loading
        current = self._loaded
        source = resolve_allowed(wanted.model, self.settings.models_dir)
        digest = source.digest
        if expected_digest and expected_digest != digest:
            raise StaleDeploymentError(
                f"model {wanted.model!r} here has digest {digest}, the plan expects {expected_digest}; "
                "give this worker the same model file as the plan (or re-plan with its digest)"
            )
        spec = source.spec
        try:
            wanted.segment.check_within(spec.n_blocks)
        except ValueError as error:
            raise InvalidRequestError(f"segment {wanted.segment}: {error}") from None
        wanted = replace(
            wanted,
            model_digest=digest,
            dtype=wanted.dtype or "float32",  # "" says the default: the same deployment as "float32"
            max_context=wanted.max_context or min(DEFAULT_MAX_CONTEXT, spec.max_context),
        )
        if wanted.max_context > spec.max_context:
            raise InvalidRequestError(
                f"max_context {wanted.max_context} exceeds the model's context of {spec.max_context} tokens"
            )
        if current is not None and current.deployment == wanted:
            return replace(
                current.result, load_s=0.0, dropped_sessions=(), units_kept=len(current.model.units())
            )
        slots = self._slots_for(wanted, spec)
        start = time.perf_counter()
        reusable = current is not None and _same_weights(current.deployment, wanted)
        # The old segment serves on until the new one is in memory, so a load that fails (a broken
        # checkpoint, an unsupported file, too little memory) leaves the worker and its sessions as they
        # were. A redeploy to other weights holds both segments for that moment, less the units they
        # share: a re-plan that moves this worker's range reads only the units it did not hold.
        if reusable:
            model = current.model
        else:
            held = current.model if current is not None and _same_model(current.deployment, wanted) else None
            model = load_segment(
                source,
                wanted.segment,
                dtype=DTYPES[wanted.dtype],
                device=self.settings.device,
                held=held,
                hash_units=True,
            )
        kept = _units_shared(model, current.model) if current is not None else 0
        cache = model.new_cache(slots=slots, max_len=wanted.max_context)
        _synchronize(self.settings.device)
        result = LoadResult(
            deployment=wanted,
            model_name=wanted.model,
            weights_digest=current.result.weights_digest if reusable else model.weights_digest(),
            n_blocks=spec.n_blocks,
            hidden_size=spec.hidden_size,
            vocab_size=spec.vocab_size,
            kv_slots=slots,
            weight_bytes=model.weight_bytes(),
            kv_bytes=cache.nbytes,
            load_s=time.perf_counter() - start,
            device=str(next(model.parameters()).device),
            dropped_sessions=tuple(current.sessions.ids()) if current else (),
            units_kept=kept,
        )
        sessions = SessionTable(slots, wanted.max_context, self.settings.idle_timeout_s)
        self._loaded = _Loaded(wanted, result, model, cache, sessions)
        log.info(
            "loaded %s %s of %s (plan %s epoch %d) in %.2f s, %d of its units kept: %d KV slots of %d tokens",
            self.settings.name, wanted.segment, source.name, wanted.plan_id, wanted.epoch,
            result.load_s, kept, slots, wanted.max_context,
        )  # fmt: skip
        return result

    def _slots_for(self, wanted: Deployment, spec) -> int:
        if wanted.max_sessions > MAX_SESSIONS:
            raise CapacityError(
                f"{wanted.max_sessions} sessions asked for; a worker holds at most {MAX_SESSIONS} at once: "
                "ask for fewer, and run more workers for more"
            )
        n_blocks = len(wanted.segment.blocks(spec.n_blocks))
        value_bytes = torch.empty((), dtype=DTYPES[wanted.dtype]).element_size()
        slot_bytes = n_blocks * spec.kv_bytes_per_token(value_bytes) * wanted.max_context
        budget = self.settings.kv_budget_bytes
        fits = budget // slot_bytes if slot_bytes else wanted.max_sessions or self.settings.default_sessions
        slots = wanted.max_sessions or min(fits, self.settings.default_sessions)
        if slots < 1 or slots > fits:
            raise CapacityError(
                f"{max(slots, 1)} sessions of {wanted.max_context} tokens need "
                f"{max(slots, 1) * slot_bytes / 2**20:.1f} MiB of KV cache for {n_blocks} blocks, over this "
                f"worker's budget of {budget / 2**20:.1f} MiB; ask for fewer sessions or a shorter "
                "max_context (partition serve and bench: --max-sessions, --max-context), or start the "
                "worker with a larger --kv-budget-mb"
            )
        return slots

    # -- sessions -------------------------------------------------------------------------------------

    def check_deployment(self, plan_id: str, epoch: int, model_digest: str | None = None) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            raise StaleDeploymentError(f"{NOTHING_LOADED}; deploy the plan (LoadSegment) first")
        d = loaded.deployment
        if (plan_id, epoch) != (d.plan_id, d.epoch):
            raise StaleDeploymentError(
                f"request is for plan {plan_id!r} epoch {epoch}, {SERVES_ANOTHER_PLAN} {d.plan_id!r} "
                f"epoch {d.epoch}; open a new session against the current plan"
            )
        if model_digest is not None and model_digest != d.model_digest:
            raise StaleDeploymentError(
                f"request is for model digest {model_digest}, but this worker runs {d.model!r} with digest "
                f"{d.model_digest}; open the session with the digest LoadSegment answered"
            )
        return loaded

    def open_session(
        self, session_id: str, plan_id: str, epoch: int, model_digest: str
    ) -> tuple[Session, bool]:
        """The session's slot (new or existing) and whether it is new; checks the deployment first."""
        loaded = self.check_deployment(plan_id, epoch, model_digest)
        session, new = loaded.sessions.open(session_id)
        if new:
            # a new session must not see the previous owners' keys
            loaded.cache.clear_slot(session.slot, loaded.sessions.take_stale_positions(session.slot))
        return session, new

    def end_session(self, session_id: str, plan_id: str, epoch: int) -> Session | None:
        return self.check_deployment(plan_id, epoch).sessions.end(session_id)

    def expire_idle(self) -> list[str]:
        if self._loaded is None:
            return []
        return [s.session_id for s in self._loaded.sessions.expire()]

    def session_ids(self) -> set[str]:
        return set(self._loaded.sessions.ids()) if self._loaded is not None else set()

    # -- steps ----------------------------------------------------------------------------------------

    def begin_step(self, session_id: str, plan_id: str, epoch: int, position: int, n_tokens: int) -> Session:
        """Check a step's header before its payload is decoded."""
        loaded = self.check_deployment(plan_id, epoch)
        session = loaded.sessions.get(session_id)
        if n_tokens < 1:
            raise InvalidRequestError(f"session {session_id!r}: n_tokens must be at least 1, got {n_tokens}")
        loaded.sessions.check_step(session, position, n_tokens)
        return session

    def input_values(self, n_tokens: int) -> int:
        """How many values the input of a step of `n_tokens` holds: the most its tensor may declare, checked
        before the payload is decoded (a small compressed message must not make the worker allocate more)."""
        model = self._loaded.model
        return n_tokens if model.takes_token_ids else n_tokens * model.spec.hidden_size

    def run_step(self, session: Session, x: torch.Tensor, n_tokens: int, last_only: bool) -> torch.Tensor:
        """Run the segment on one session's step. The session's position moves on only with `end_step`,
        once the output is on its way: a step refused after it ran (an output its codec cannot encode)
        may be sent again at the same position, and its keys are written again.

        x: token ids [1, n_tokens] int64 if the segment holds embed, else activations [1, n_tokens, D].
        Returns hidden [1, n_tokens, D], or logits [1, n_tokens or 1, V] if it holds the head.
        """
        loaded = self._loaded
        assert loaded is not None  # begin_step checked it in this same lane call
        model = loaded.model
        x = self._checked_input(model, x, n_tokens)
        loaded.sessions.writing(session, n_tokens)
        out = model(
            x,
            loaded.cache,
            slots=[session.slot],
            positions=[session.next_position],
            last_token_only=last_only,
        )
        _synchronize(self.settings.device)
        return out

    def run_decode_steps(self, steps: list[tuple[Session, torch.Tensor]]) -> torch.Tensor:
        """Run one decode step of each of several sessions as one forward: row b of the result is
        steps[b]'s output, as `run_step` would give it up to rounding (a batch multiplies its rows in
        other blocks). The weights are read once for all rows, which is where a decode step's time goes.
        Each session appears once; each x is its step's input of one token, as `run_step` takes it.
        """
        loaded = self._loaded
        assert loaded is not None  # begin_step checked it in this same lane call
        model = loaded.model
        rows = [self._checked_input(model, x, 1) for _, x in steps]
        for session, _ in steps:
            loaded.sessions.writing(session, 1)
        out = model(
            torch.cat(rows),
            loaded.cache,
            slots=[session.slot for session, _ in steps],
            positions=[session.next_position for session, _ in steps],
        )
        _synchronize(self.settings.device)
        return out

    @property
    def open_sessions(self) -> int:
        """Sessions holding a KV slot here now."""
        return len(self._loaded.sessions) if self._loaded is not None else 0

    def sessions_stepping(self, within_s: float) -> int:
        """Sessions that took a step (or opened) within the last `within_s` seconds: decoding now."""
        if self._loaded is None:
            return 0
        return self._loaded.sessions.stepped_since(time.monotonic() - within_s)

    @property
    def chain_workers(self) -> int:
        """Workers in the chain of the loaded plan, this one included (1 when nothing is loaded)."""
        return self._loaded.deployment.chain_workers if self._loaded is not None else 1

    def end_step(self, session: Session, n_tokens: int) -> None:
        """The step of `run_step` went through: the session's next one starts `n_tokens` later."""
        self._loaded.sessions.advance(session, n_tokens)

    def _checked_input(self, model, x: torch.Tensor, n_tokens: int) -> torch.Tensor:
        spec = model.spec
        segment = model.segment
        if model.takes_token_ids:
            if x.dtype != torch.int64 or tuple(x.shape) != (1, n_tokens):
                raise InvalidRequestError(
                    f"this stage holds units {segment} starting with embed: it takes token ids [1, {n_tokens}], "
                    f"got {x.dtype} {list(x.shape)}"
                )
            if int(x.min()) < 0 or int(x.max()) >= spec.vocab_size:
                raise InvalidRequestError(
                    f"token ids must lie in [0, {spec.vocab_size}), got {int(x.min())}..{int(x.max())}"
                )
            return x.to(self.settings.device)
        if not x.dtype.is_floating_point or tuple(x.shape) != (1, n_tokens, spec.hidden_size):
            raise InvalidRequestError(
                f"this stage holds units {segment}: it takes activations [1, {n_tokens}, {spec.hidden_size}], "
                f"got {x.dtype} {list(x.shape)}"
            )
        dtype = DTYPES[self._loaded.deployment.dtype]  # the segment's weights were loaded in it
        if x.dtype == dtype and self.settings.device == "cpu":
            return x  # the usual case (float32 on the CPU): no conversion to pay for on every step
        return x.to(device=self.settings.device, dtype=dtype)


def _check_request(wanted: Deployment) -> None:
    if not wanted.plan_id:
        raise InvalidRequestError("plan_id is empty; LoadSegment needs the plan's id")
    if wanted.epoch < 1:
        raise InvalidRequestError(f"epoch must be at least 1, got {wanted.epoch}")
    if wanted.dtype not in DTYPES:
        raise InvalidRequestError(f"dtype {wanted.dtype!r} is not one of float32, float16, bfloat16")


def _same_weights(a: Deployment, b: Deployment) -> bool:
    return _same_model(a, b) and a.segment == b.segment


def _same_model(a: Deployment, b: Deployment) -> bool:
    """The same checkpoint in the same dtype: a unit loaded for one serves the other as it is."""
    return (a.model_digest, a.dtype) == (b.model_digest, b.dtype)


def _units_shared(model, held) -> int:
    held_units = set(map(id, held.units().values()))
    return sum(id(module) in held_units for module in model.units().values())


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)  # the worker's GPU ("cuda:1"), not the current one
