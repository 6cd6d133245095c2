"""Benchmark a deployment (serve -> metrics): N requests at a concurrency, every token timed on one clock,
every hop spanned, and each stage and link measured beside the plan's prediction.

Requests generate exactly `new_tokens` greedy tokens (EOS ignored) from prompts of exactly
`prompt_tokens` tokens, so measured numbers are comparable with the plan's predictions for its workload.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from partition.coordinator.deploy import Deployment
from partition.coordinator.session import PipelineSession
from partition.metrics.latency import RequestTiming
from partition.metrics.report import Comparison
from partition.metrics.spans import HopSpan, link_summaries, outside_spans_p50_s, stage_summaries
from partition.model.generation import GenerationRequest, generate
from partition.transport.client import StageCallError

PROMPT_TEXT = (
    "The history of the lighthouse begins with fires lit on hilltops to guide ships home at night. "
    "Over the centuries keepers tended lamps of oil, then of gas, and finally of electricity. "
)


# The plan predicts a request's TTFT from its open session: the prefill through the chain. Opening the
# session (a round trip through the chain's stages) is measured beside it, unpredicted.
TTFT_AFTER_OPEN = "TTFT after open"
SESSION_OPEN = "session open"


@dataclass(frozen=True)
class BenchRun:
    timings: tuple[RequestTiming, ...]  # one per request, perf_counter seconds; t0 before the session opens
    open_s: tuple[float, ...]  # one per request: seconds opening its session took (part of its TTFT)
    spans: tuple[HopSpan, ...]  # every hop of every step of every request
    token_ids: tuple[tuple[int, ...], ...]  # what each request generated
    # requests a worker failed, by index, in order: the fields above hold only the requests answered
    failed: tuple[tuple[int, StageCallError], ...] = ()


def bench_prompt(tokenizer, prompt_tokens: int) -> list[int]:
    """Exactly `prompt_tokens` ids of ordinary English text."""
    base = tokenizer.encode(PROMPT_TEXT)
    ids = (base * (prompt_tokens // len(base) + 1))[:prompt_tokens]
    return ids


def run_requests(
    deployment: Deployment,
    prompt_ids: Sequence[int],
    new_tokens: int,
    requests: int,
    concurrency: int = 1,
) -> BenchRun:
    """Send the requests, `concurrency` at a time. One that a worker fails (StageCallError) is kept
    in `failed` and the run goes on, as a serving benchmark counts failed requests beside the others;
    any other error ends the run."""
    context = len(prompt_ids) + new_tokens

    def one(index: int):
        arrival_s = time.perf_counter()
        try:
            session = PipelineSession(deployment, session_id=f"bench-{index}", context=context)
        except StageCallError as error:
            return error
        open_s = time.perf_counter() - arrival_s
        try:
            request = GenerationRequest(list(prompt_ids), max_new_tokens=new_tokens, context=context)
            result = generate(session.step, request, eos_ids=(), decode=lambda ids: "", arrival_s=arrival_s)
        except BaseException as error:
            with contextlib.suppress(Exception):  # its stages may be gone: nothing left to free
                session.close()
            if isinstance(error, StageCallError):
                return error
            raise
        session.close()
        timing = RequestTiming(arrival_s, tuple(result.token_times_s), len(prompt_ids))
        return timing, open_s, session.spans, tuple(result.token_ids)

    def named(error: StageCallError) -> StageCallError:  # by the plan's device, as serve names it
        device = error.device or deployment.devices.get(error.address, "")
        return StageCallError(error.code, error.details, error.address, device)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(one, range(requests)))
    answered = [outcome for outcome in outcomes if not isinstance(outcome, StageCallError)]
    return BenchRun(
        timings=tuple(t for t, _, _, _ in answered),
        open_s=tuple(o for _, o, _, _ in answered),
        spans=tuple(span for _, _, spans, _ in answered for span in spans),
        token_ids=tuple(ids for _, _, _, ids in answered),
        failed=tuple((i, named(o)) for i, o in enumerate(outcomes) if isinstance(o, StageCallError)),
    )


def workload_caveat(plan, prompt_tokens: int, new_tokens: int, concurrency: int) -> str | None:
    """What makes the plan's predictions not comparable with this run, or None when the run is the
    plan's workload: the plan predicts its own prompt length, output length and sessions at once."""
    w = plan.workload
    ran = {"--prompt-tokens": (w.prompt_tokens, prompt_tokens), "--new-tokens": (w.new_tokens, new_tokens)}
    ran["--sessions"] = (w.sessions, concurrency)  # bench's --concurrency is plan's --sessions
    differ = {flag: (planned, used) for flag, (planned, used) in ran.items() if planned != used}
    notes = []
    if differ:
        what = ", ".join(
            f"{flag.removeprefix('--')} {used} (plan: {planned})" for flag, (planned, used) in differ.items()
        )
        again = " ".join(f"{flag} {used}" for flag, (_, used) in differ.items())
        notes.append(
            f"the plan predicts its own workload, and this run differs: {what}; the predictions below are "
            f"not for this run (`partition plan ... {again}` predicts it)"
        )
    if w.sessions > 1:
        notes.append(
            f"the plan predicts its {w.sessions} sessions' prompts and decode steps as one batch each, where "
            "the workers batch only the decode steps that wait together and the edge steps each session "
            "apart: its TTFT and TPOT are not what this run measures"
        )
    return "; ".join(notes) or None


def predicted_vs_measured(deployment: Deployment, run: BenchRun) -> list[Comparison]:
    """TTFT from the open session, TPOT, each stage's decode compute and each link's decode latency:
    plan beside measurement (medians over requests); then what the plan does not predict."""
    plan = deployment.plan
    ttfts = [t.token_times_s[0] - t.arrival_s - o for t, o in zip(run.timings, run.open_s, strict=True)]
    tpots = [
        (t.token_times_s[-1] - t.token_times_s[0]) / (t.n_tokens - 1) for t in run.timings if t.n_tokens > 1
    ]
    rows = [Comparison(TTFT_AFTER_OPEN, plan.predicted.ttft_s, statistics.median(ttfts))]
    if tpots:  # one token per request has no TPOT
        rows.append(Comparison("TPOT", plan.predicted.tpot_s, statistics.median(tpots)))
    stages = stage_summaries(run.spans)
    topology = deployment.topology
    has_front = topology.front is not None
    # hop index of each plan stage: the front is hop 0, remote stage i is hop i (+1 with a front),
    # the tail (head on the edge) computes at the last hop, where the result comes back
    hop_of_stage = []
    if has_front:
        hop_of_stage.append(0)
    hop_of_stage += [i + int(has_front) for i in range(len(topology.remote))]
    if topology.tail is not None:
        hop_of_stage.append(len(topology.remote) + int(has_front) if topology.remote else int(has_front))
    by_hop = {s.hop: s for s in stages}
    for stage, prediction, hop in zip(plan.stages, plan.predicted.stages, hop_of_stage, strict=False):
        measured = by_hop.get(hop)
        if measured is not None:
            name = f"stage {stage.device} {stage.segment}"
            rows.append(Comparison(name, prediction.step_s, measured.compute_p50_s))
    links = [link for link in link_summaries(run.spans) if link.src]
    # A link's decode prediction is for the plan's S sessions in one message; each message carries one
    # session's token, so only a one-session plan predicts what a link is measured doing.
    one_session = plan.workload.sessions == 1
    for prediction, measured in zip(plan.predicted.links, links, strict=False):
        if (prediction.src, prediction.dst) == (measured.src, measured.dst):
            predicted = prediction.decode_s if one_session else None
            rows.append(
                Comparison(f"link {measured.src} -> {measured.dst}", predicted, measured.latency_p50_s)
            )
    rows.append(Comparison(SESSION_OPEN, None, statistics.median(run.open_s)))
    outside = outside_spans_p50_s(run.spans)
    if outside is not None:  # the plan counts this work in the head's prediction, not apart
        rows.append(Comparison(f"{plan.edge} outside spans", None, outside))
    return rows
