"""Answer one generation request through a deployment (serve): a session, the generation loop, and
failures named by the plan's device. `partition serve --prompt` and the HTTP endpoint both go through it.

    answerer = Answerer(deployment)          # labels={"baseline": ...} when serving a plan's baseline
    answer = answerer.answer(request, on_text=print_chunk)   # waits for a free session slot first
    answer.result.text, answer.report()                        # the text, and where its time went

Each worker holds `max_sessions` KV slots; requests beyond that wait here for a slot instead of being
refused by a worker. A request that fails (a worker went away, the caller went away, also while its
prompt is prefilled) abandons its session: a step still in flight goes no further down the chain,
and its slot is free for the next one. A worker that went away and was started again at its
address holds nothing: every worker gets its segment again (LoadSegment, same plan and epoch) before
the next request, or, when it is back within seconds, the request under way resumes on a new session
(partition/coordinator/resume.py). A worker that stays away ends the request, named by its device,
unless serve has the cluster's profiles: then the plan is made again without it and deployed, and the
request resumes on the new split (partition/coordinator/replan.py). Once its worker listens again, the
next request to start first plans with it again: the requests under way end first (at most DRAIN_S),
and the requests that arrive meanwhile wait.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc

from partition.coordinator.deploy import Deployment, load_workers
from partition.coordinator.loop import STOPPED, WANTED_CHECK_S
from partition.coordinator.replan import Failover
from partition.coordinator.resume import MAX_RESUMES, ResumingSession
from partition.coordinator.session import PipelineSession
from partition.errors import PartitionError, StoppedError
from partition.metrics.spans import HopSpan, link_summaries, stage_summaries
from partition.model.generation import GenerationRequest, GenerationResult, TokenLogprob, generate
from partition.model.sampling import SamplingParams
from partition.runtime.errors import NOT_THIS_WORKER, SERVES_ANOTHER_PLAN
from partition.transport.channels import RECONNECT_WAIT_S
from partition.transport.client import StageCallError
from partition.types import RAW_VALUE_BYTES, RETURN_TOP_K, Plan

log = logging.getLogger(__name__)

# What to do when a worker is gone for good, where workers are started by hand or by serve.
LOST_ADVICE = "start it again (or serve with --spawn-local) and send the prompt again"
# A worker that did not answer a load: gone, or not back yet after one reconnect attempt.
STILL_AWAY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# Seconds a take-back waits for the requests under way to end (new ones wait meanwhile); past that it
# is put off to a later look (Failover.postpone), so that a busy server is not held up at every look.
DRAIN_S = 20.0


def still_away(error: StageCallError) -> bool:
    """Whether a reload's `error` says the plan's worker is not at its address: it did not answer, or
    another worker answers there now (its port or IP given to another), which keeps its own segment."""
    if error.code in STILL_AWAY:
        return True
    return error.code == grpc.StatusCode.FAILED_PRECONDITION and NOT_THIS_WORKER in error.details


@dataclass(frozen=True)
class Answer:
    result: GenerationResult
    spans: tuple[HopSpan, ...]  # every hop of every step
    plan: Plan  # the plan it ran on
    labels: Mapping[str, str] = field(default_factory=dict)  # what else the report says of that plan
    resumes: int = 0  # times a worker went away mid-request and the request went on (coordinator/resume.py)

    def report(self) -> dict:
        """Timings of the answer, per link and per stage, beside the plan's prediction (JSON-ready): of
        its decode steps, or of its prompt's step when it had none (an answer of one token)."""
        result = self.result
        decoded = any(span.token > 0 for span in self.spans)
        return {
            "plan_id": self.plan.plan_id,
            "epoch": self.plan.epoch,
            **self.labels,
            "metrics": {"ttft_s": result.ttft_s, "tpot_s": result.tpot_s, "tbt_s": result.tbt_s},
            "hops": [
                {
                    "from": link.src,
                    "to": link.dst,
                    "codec": link.codec,
                    "latency_p50_s": link.latency_p50_s,
                    "latency_p99_s": link.latency_p99_s,
                    "wire_p50_s": link.wire_p50_s,
                    "bytes_per_token": link.bytes_per_token,
                }
                for link in link_summaries(self.spans, decode_only=decoded)
            ],
            "stages": [
                {
                    "device": s.device,
                    "compute_p50_s": s.compute_p50_s,
                    "queue_p50_s": s.queue_p50_s,
                    "batch_mean": s.batch_mean,
                }
                for s in stage_summaries(self.spans, decode_only=decoded)
            ],
            "hops_of": "decode steps" if decoded else "the prompt's step",
            "predicted": {"ttft_s": self.plan.predicted.ttft_s, "tpot_s": self.plan.predicted.tpot_s},
            "resumes": self.resumes,
        }


class Answerer:
    def __init__(
        self,
        deployment: Deployment,
        labels: Mapping[str, str] | None = None,
        before_reload: Callable[[], None] | None = None,
        max_resumes: int = MAX_RESUMES,
        failover: Failover | None = None,
        lost_advice: str = LOST_ADVICE,
        reconnect_wait_s: float = RECONNECT_WAIT_S,
    ) -> None:
        """`labels`: said beside the plan id wherever the plan is named (every answer's report, the
        endpoint's /health and /metrics); serve --baseline names the baseline and the plan it is of.
        `before_reload`: called when a worker went away, before the workers get their segments again
        (serve --spawn-local starts its dead workers again there). `max_resumes`: per request, how
        many times a request goes on after a worker came back or was planned around (0: a lost worker
        ends it, and no re-plan is made). `failover`: re-plans without a worker that stays away;
        without it such a worker ends the request. `lost_advice`: what the error of a request that lost
        a worker for good tells its user to do. `reconnect_wait_s`: how long a worker that went away is
        waited for before it counts as staying away."""
        from partition.model.tokenizer import load_tokenizer

        self.deployment = deployment
        self.labels = dict(labels or {})
        self.tokenizer = load_tokenizer(deployment.source)
        self.eos_ids = tuple(sorted(set(deployment.source.spec.eos_token_ids) | set(self.tokenizer.eos_ids)))
        self._slots = threading.BoundedSemaphore(max(1, deployment.max_sessions))
        self._counts = threading.Lock()
        self.waiting = 0  # requests waiting now: for a session slot, or behind (or draining for) a take-back
        self.reloads = 0  # times the workers were loaded again after one went away
        self._reloading = threading.Lock()
        self._reload_tries = 0  # reloads begun, failed or not (see _load_workers_again)
        self._reload_failure: Exception | None = None  # why the last one failed
        self._before_reload = before_reload
        self.max_resumes = max_resumes
        self.lost_advice = lost_advice
        self.reconnect_wait_s = reconnect_wait_s
        self.failover = failover  # None: a worker that stays away ends the request
        self.replans = 0  # times a worker stayed away and the plan was made again without it
        self.rejoins = 0  # times a device planned around was back and a plan with it was deployed
        self._changing = threading.Condition(self._counts)  # notified when a take-back or a request ends
        self._taking_back = False  # a request is looking for returned devices (and taking them back)
        # Deployments a re-plan replaced, each closed once no request runs on it (its edge segments
        # and channels go then); the requests under way, by the deployment they run on.
        self._retired: list[Deployment] = []
        self._live: set[ResumingSession] = set()
        self._devices = deployment.devices  # of every plan served: an error may come from an old one

    def logits_note(self, sampling: SamplingParams, ask_top_k: str) -> str | None:
        """What a sampler costs beyond the plan, when a worker must send every logit back for it;
        `ask_top_k` says how to ask for top-k 64 where the request comes from ("--top-k 64")."""
        if (
            sampling.deciding_logits is not None and not sampling.lifts
        ) or not self.deployment.returns_remote_logits:
            return None
        cost = f"so the worker holding the head sends {RAW_VALUE_BYTES * self.deployment.source.spec.vocab_size} "
        cost += f"bytes per token instead of the plan's top {RETURN_TOP_K}"
        if sampling.lifts:  # a token may rise from anywhere: no top-k bounds where from
            return (
                f"a penalty that raises a token (presence or frequency below 0, repetition below 1) or a "
                f"positive logit bias needs every logit, {cost}; penalties that only lower tokens, and "
                "negative biases, keep the plan's cost"
            )
        return (
            f"sampling with temperature and no top-k needs every logit, {cost}; add {ask_top_k} (or fewer) to "
            "keep the plan's cost, or plan with --head-on-edge"
        )

    def answer(
        self,
        request: GenerationRequest,
        on_text: Callable[[str], None] | None = None,
        still_wanted: Callable[[], None] | None = None,
        on_token: Callable[[TokenLogprob], None] | None = None,
    ) -> Answer:
        """Generate `request` through the split; `on_text` gets the text as it is decoded, and `on_token`
        each token's log-probabilities before its text (a request that asks for them). An exception
        from `on_text` (the caller went away) ends the request and frees its session; so does one from
        `still_wanted`, asked while the request waits for a session slot, once it has one, and while
        each step's result is awaited (every WANTED_CHECK_S): a caller gone during a long prefill
        does not hold the chain until the first token. Its TTFT counts from now: the wait for a slot
        and the session's opening included."""
        arrival_s = time.perf_counter()
        with self._slot(still_wanted):
            session = ResumingSession(
                lambda d: PipelineSession(
                    d,
                    context=request.context,
                    sampling=request.sampling,
                    still_wanted=still_wanted,
                    log_probs=request.logprobs is not None,
                    extra_logits=request.extra_logits(self.eos_ids),
                ),
                self._load_workers_again,
                lambda: self.deployment,
                lambda: self._reload_tries,
                self.max_resumes,
            )
            try:
                self._admit(session)
                decode = functools.partial(self.tokenizer.decode, skip_special=request.skip_special)
                result = generate(
                    session.step, request, self.eos_ids, decode, on_text, arrival_s, on_token, session.scores
                )
            except BaseException as error:
                with contextlib.suppress(Exception):  # ending fails the same way; the first error says why
                    if isinstance(error, StageCallError):
                        # a worker failed: the chain holds nothing in flight, and its caller waits for
                        # the error, so the session ends as a whole one does (EndSession within seconds)
                        session.close()
                    else:
                        # the caller went away (or serve stops): nothing still in flight is wanted, and
                        # it goes no further down the chain
                        session.abandon()
                if isinstance(error, Exception) and self.deployment.closed:  # whatever the stop cut short
                    raise StoppedError(STOPPED) from None
                if isinstance(error, StageCallError):
                    raise self._named(error) from None
                raise
            else:  # before _forget: a take-back may then close the deployment it is on
                try:
                    session.close()
                except StageCallError as error:  # the answer is whole: a worker gone since holds no slot
                    log.warning("the answer is whole, but ending its session failed: %s", error.details)
            finally:
                self._forget(session)
        plan = session.session.deployment.plan if session.session is not None else self.deployment.plan
        return Answer(result, tuple(session.spans), plan, self.labels, session.resumes)

    def close(self) -> None:
        """Close the deployment served now and every replaced one still open."""
        # Each one closed, whatever the others raise, in the order given: the one served now last, as
        # after a re-plan it owns the event loop the replaced ones still close their channels on.
        with contextlib.ExitStack() as closing:
            for deployment in reversed([*self._retired, self.deployment]):
                closing.callback(deployment.close)
        self._retired = []

    def _admit(self, session: ResumingSession) -> None:
        """Count `session` as under way. When a device planned around is back (looked for at most every
        `recheck_s`), first deploy a plan with it: the requests under way end first (a drain of at most
        DRAIN_S), and requests starting meanwhile wait for the take-back."""
        with self._changing:
            self.waiting += 1  # until it is under way: it generates nothing meanwhile
            try:
                while self._taking_back:
                    self._changing.wait()
            except BaseException:
                self.waiting -= 1
                raise
            if self.failover is None or not self.failover.due():  # nothing to look for: no probe
                self._under_way(session)
                return
            self._taking_back = True
        try:
            self._take_back()
        finally:
            with self._changing:
                self._taking_back = False
                self._under_way(session)
                self._changing.notify_all()

    def _under_way(self, session: ResumingSession) -> None:
        """Under `_changing`: the request leaves the waiting ones and starts generating."""
        self.waiting -= 1
        self._live.add(session)

    @property
    def restarts_workers(self) -> bool:
        """Whether a worker that went away is started again here (serve --spawn-local, --ray)."""
        return self._before_reload is not None

    @property
    def changing_plan(self) -> bool:
        """Whether the workers are being given segments now (a reload, a re-plan or a take-back), so
        that some may serve the next plan before this one is replaced."""
        return self._reloading.locked() or self._taking_back

    @property
    def reload_failure(self) -> Exception | None:
        """Why the last reload after a lost worker failed (None: it did not, or none was needed)."""
        return self._reload_failure

    @property
    def running(self) -> int:
        """Requests generating now."""
        return len(self._live)

    def _take_back(self) -> None:
        """Deploy a plan with the devices planned around whose workers listen again; on failure, log why
        and keep serving the plan as it is (the take-back is an improvement, never a request's end)."""
        returned = self.failover.returned()
        if not returned:
            return
        if not self._drained(DRAIN_S):
            self.failover.postpone()
            log.warning(
                "%s back, but the requests under way did not end within %.0f s: serving plan %s epoch %d "
                "as it is, next look in %.0f s",
                ", ".join(sorted(returned)), DRAIN_S, self.deployment.plan.plan_id, self.deployment.plan.epoch,
                self.failover.wait_s,
            )  # fmt: skip
            return
        with self._reloading:
            old = self.deployment
            try:
                new = self.failover.take_back(old)
            except Exception as failed:
                log.error(
                    "planning with %s again failed: %s; serving plan %s epoch %d as it is, next look in %.0f s",
                    ", ".join(sorted(returned)), failed, old.plan.plan_id, old.plan.epoch, self.failover.wait_s,
                    exc_info=not isinstance(failed, PartitionError),
                )  # fmt: skip
                self._restore(old)
                return
            if new is None:
                return
            self._swap(new)
            self.rejoins += 1

    def _swap(self, new: Deployment) -> None:
        """Serve `new` from now on; the deployment it replaces is closed once no request runs on it
        (the requests still on it move to `new`, see ResumingSession)."""
        with self._counts:
            self._devices |= new.devices
            self._retired.append(self.deployment)
            self.deployment = new

    @staticmethod
    def _restore(old: Deployment) -> None:
        """After a new plan failed to deploy: the workers it reached load `old`'s segments again."""
        if old.chain is None:  # edge-only: no worker serves it
            return
        try:
            load_workers(old)
        except Exception as error:  # a session on it will then name what is wrong
            log.warning(
                "cannot load plan %s epoch %d on the workers again: %s",
                old.plan.plan_id,
                old.plan.epoch,
                error,
            )

    def _drained(self, timeout_s: float) -> bool:
        """Wait until no request is under way, at most `timeout_s`; whether none is."""
        deadline = time.monotonic() + timeout_s
        with self._changing:
            while self._live:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changing.wait(left)
        return True

    def _forget(self, session: ResumingSession) -> None:
        """A request ended: close the replaced deployments no request runs on any more."""
        with self._changing:
            self._live.discard(session)
            self._changing.notify_all()  # a take-back may be waiting for the requests under way
            in_use = {id(live.deployment) for live in self._live}
            idle = [d for d in self._retired if id(d) not in in_use]
            self._retired = [d for d in self._retired if id(d) in in_use]
        for deployment in idle:
            with contextlib.suppress(Exception):  # its workers may be gone: nothing left to free
                deployment.close()

    def _load_workers_again(self, mark: int) -> bool:
        """LoadSegment on every worker; for a worker still away, a re-plan without it (with a failover),
        else StageCallError (the next request tries again). Requests that found the same worker gone
        share one reload: a request whose session opened before the latest try began (`mark`, the
        tries begun then) takes that try's outcome instead of trying again, whether it waited for the
        try or came after it, and gets False; True when this call made the try."""
        with self._reloading:
            if self._reload_tries != mark:
                if self._reload_failure is not None:
                    raise self._reload_failure
                return False
            self._reload_tries += 1
            try:
                if self.deployment.chain is not None:  # None: every stage is on the edge, nothing to load
                    self._reload_or_replan(self.deployment)
            except Exception as error:
                self._reload_failure = error
                raise
            self._reload_failure = None
            return True

    def _reload_or_replan(self, d: Deployment) -> None:
        if self._before_reload is not None:
            self._before_reload()
        try:
            load_workers(d, self.reconnect_wait_s)
        except StageCallError as error:
            if self.failover is None or not still_away(error):
                raise
            self._replan_without(error)
            return
        self.reloads += 1
        log.warning("loaded the plan's segments on the workers again (a worker had gone away)")

    def _replan_without(self, error: StageCallError) -> None:
        """Deploy a plan without the worker `error` came from; `error`, saying why, if that fails."""
        old = self.deployment
        device = self._devices.get(error.address, "")
        if not device:
            raise error
        try:
            new = self.failover.redeploy(old, device)
        except PartitionError as failed:
            log.error("re-planning without %s failed: %s", device, failed)
            self._restore(old)
            raise StageCallError(
                error.code, f"{error.details}; planning without it failed: {failed}", error.address, device
            ) from None
        self._swap(new)
        self.replans += 1

    @contextlib.contextmanager
    def _slot(self, still_wanted: Callable[[], None] | None = None):
        """Hold one of the workers' session slots, waiting (counted) for one if all are taken, and asking
        `still_wanted` meanwhile and once one is held (what it raises gives the turn up)."""
        with self._counts:
            self.waiting += 1
        try:
            while not self._slots.acquire(timeout=WANTED_CHECK_S if still_wanted else None):
                still_wanted()
        finally:
            with self._counts:
                self.waiting -= 1
        try:
            if still_wanted is not None:
                still_wanted()  # it may have left just as the slot came free
            yield
        finally:
            self._slots.release()

    def _named(self, error: StageCallError) -> StageCallError:
        """The same failure (code and address kept), named by the stage's device as in the plan, and for a
        worker that went away, what to do."""
        device = self._devices.get(error.address, "")
        details = error.details
        if error.code == grpc.StatusCode.UNAVAILABLE:
            where = f"{device} at {error.address}" if device else error.address
            details += f"; the worker of {where} stopped or cannot be reached: {self.lost_advice}"
        elif error.code == grpc.StatusCode.FAILED_PRECONDITION and SERVES_ANOTHER_PLAN in details:
            # not a worker restarted (that one has nothing loaded, and is loaded again): another
            # deployment gave it its own segment, which reloading ours would take away in turn
            details += (
                "; another deployment took this worker (a second serve given the same workers): stop it "
                "and start this serve again, or give each serve workers of its own"
            )
        return StageCallError(error.code, details, error.address, device)
