"""Benchmark a plan (serve -> metrics): TTFT, TBT, TPOT, normalized latency, fluidity-index, fluid token
rate, throughput, and every stage and link measured beside the plan's prediction.

partition bench --plan plan.json --spawn-local --requests 5 --json out/bench.json --plot out/timeline.png
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from partition.cli.arguments import image_file, output_file, positive_number, whole_number
from partition.cli.serve import (
    add_threads_argument,
    add_transport_arguments,
    transport_config,
    use_edge_threads,
)

# The shortest deadline a token can be timed against: token times come from a clock read in Python.
DEADLINE_MIN_S = 1e-6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, help="plan.json from `partition plan`")
    parser.add_argument("--baseline", metavar="NAME", help="benchmark one of the plan's baselines instead")
    parser.add_argument("--cluster", type=Path, help="cluster file with each device's `address`")
    parser.add_argument("--spawn-local", action="store_true", help="start missing workers on this machine")
    add_threads_argument(parser)
    parser.add_argument("--requests", type=int, default=5, help="requests to run")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument(
        "--prompt-tokens", type=whole_number(1), help="prompt length (default: the plan's workload)"
    )
    parser.add_argument(
        "--new-tokens", type=whole_number(1), help="tokens generated per request (default: the plan's)"
    )
    parser.add_argument(
        "--warmup",
        type=whole_number(zero_means="none"),
        default=1,
        help="requests run first and discarded",
    )
    parser.add_argument(
        "--ttft-deadline",
        type=positive_number("seconds", smallest=DEADLINE_MIN_S),
        default=None,
        help="seconds to the first token, for the fluidity-index (default: the plan's predicted TTFT + 0.3 s, "
        "when this run's prompt length and concurrency are the plan's)",
    )
    parser.add_argument(
        "--tbt-deadline",
        type=positive_number("seconds", smallest=DEADLINE_MIN_S),
        default=0.03,
        help="seconds per later token (default 0.03)",
    )
    slo = parser.add_argument_group(
        "service-level objectives: goodput counts the requests that meet all given"
    )
    slo.add_argument("--slo-ttft", type=float, metavar="S", help="TTFT at most S seconds")
    slo.add_argument("--slo-tpot", type=float, metavar="S", help="TPOT at most S seconds")
    slo.add_argument("--slo-tbt-p99", type=float, metavar="S", help="a request's p99 TBT at most S seconds")
    slo.add_argument(
        "--slo-fluidity", type=float, metavar="F", help="fluidity-index at least F (above 0, at most 1)"
    )
    parser.add_argument("--json", type=output_file, dest="json_out", help="write every number here")
    parser.add_argument("--spans", type=output_file, help="write every hop span here (msgpack)")
    parser.add_argument(
        "--plot", type=image_file, help="draw a per-token timeline of stages and hops (.png, .svg or .pdf)"
    )
    add_transport_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from partition.artifacts import load_plan
    from partition.coordinator.bench import (
        bench_prompt,
        predicted_vs_measured,
        run_requests,
        workload_caveat,
    )
    from partition.coordinator.deploy import deploy
    from partition.coordinator.topology import split_plan
    from partition.coordinator.workers import cluster_addresses, kv_budget_mib, spawn_missing
    from partition.errors import ConfigError
    from partition.metrics.aggregate import summarize_run
    from partition.metrics.report import comparison_table, hop_table, run_table
    from partition.metrics.spans import link_summaries, stage_summaries
    from partition.model.tokenizer import load_tokenizer

    if args.requests < 1 or args.concurrency < 1:
        raise ConfigError("--requests and --concurrency must be at least 1")
    slo = slo_from(args)
    plan = load_plan(args.plan)
    base_id = plan.plan_id
    use_edge_threads(args, plan)
    if args.baseline:
        from partition.plan.variants import baseline_plan

        plan = baseline_plan(plan, args.baseline)
    # not given (None): the workload the plan was made for
    prompt_tokens = args.prompt_tokens if args.prompt_tokens is not None else plan.workload.prompt_tokens
    new_tokens = args.new_tokens if args.new_tokens is not None else plan.workload.new_tokens
    ttft_deadline, no_deadline = first_token_deadline(args, plan, prompt_tokens)
    addresses = cluster_addresses(args.cluster) if args.cluster else {}
    remote = [s.device for s in split_plan(plan).remote]
    spawned = None
    if args.spawn_local:
        budget = kv_budget_mib(plan, prompt_tokens + new_tokens, args.concurrency)
        spawned = spawn_missing(remote, addresses, plan.model.name, args.threads, budget)
    try:
        deployment = deploy(
            plan,
            addresses,
            transport_config(args),
            max_context=prompt_tokens + new_tokens,
            max_sessions=max(args.concurrency, 1),
        )
        try:
            prompt = bench_prompt(load_tokenizer(deployment.source), prompt_tokens)
            if args.warmup:
                warm = run_requests(deployment, prompt, min(new_tokens, 8), args.warmup)
                if warm.failed:  # nothing measured yet: the chain does not serve
                    raise warm.failed[0][1]
            bench = run_requests(deployment, prompt, new_tokens, args.requests, args.concurrency)
            if not bench.timings:  # every request failed: there is nothing to report but why
                raise bench.failed[0][1]
            comparisons = predicted_vs_measured(deployment, bench)
        finally:
            deployment.close()
    finally:
        if spawned is not None:
            spawned.stop()

    metrics = summarize_run(bench.timings, ttft_deadline, args.tbt_deadline, slo)
    links, stages = link_summaries(bench.spans), stage_summaries(bench.spans)
    caveat = workload_caveat(plan, prompt_tokens, new_tokens, args.concurrency)
    what = f"baseline {args.baseline!r} of plan {base_id}" if args.baseline else f"plan {plan.plan_id}"
    print(f"{what} epoch {plan.epoch}: {args.requests} requests x {new_tokens} tokens, "
          f"prompt {prompt_tokens} tokens, concurrency {args.concurrency}")  # fmt: skip
    print(run_table(metrics))
    print()
    print(hop_table(links, stages))
    print()
    if bench.failed:
        index, error = bench.failed[0]
        print(f"note: {len(bench.failed)} of {args.requests} requests failed and are not in the metrics "
              f"above; the first, request {index}: {error}")  # fmt: skip
    if no_deadline:
        print(f"note: {no_deadline}")
    if caveat:
        print(f"note: {caveat}")
    print(comparison_table(comparisons))
    report = {
        "plan_id": plan.plan_id,
        "baseline": args.baseline,  # null: the plan's own split; else the baseline's, its own plan_id
        "base_plan_id": base_id,
        "epoch": plan.epoch,
        "stages": [[s.device, s.segment.start, s.segment.end, s.codec_out] for s in plan.stages],
        "workload": {
            "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens,
            "concurrency": args.concurrency,
        },
        "metrics": asdict(metrics),
        "links": [asdict(link) for link in links],
        "stages_measured": [asdict(stage) for stage in stages],
        "prediction_caveat": caveat,
        # requests a worker failed (index in the run, and why): the metrics are those of the others
        "failed_requests": [{"request": index, "error": str(error)} for index, error in bench.failed],
        "predicted_vs_measured": [
            {"name": c.name, "predicted_s": c.predicted_s, "measured_s": c.measured_s, "error": c.error}
            for c in comparisons
        ],
    }
    written = write_outputs(args, report, bench.spans)
    return written or (1 if bench.failed else 0)  # a run with failed requests does not pass for a clean one


def first_token_deadline(args: argparse.Namespace, plan, prompt_tokens: int) -> tuple[float | None, str]:
    """D_p of the fluidity-index: --ttft-deadline, else the plan's predicted TTFT plus Etalon's slack
    when the plan predicts this run's prefill (its prompt length and sessions); else none, and why."""
    from partition.errors import ConfigError
    from partition.metrics.fluidity import ETALON_TTFT_SLACK_S

    if args.ttft_deadline is not None:
        return args.ttft_deadline, ""
    w = plan.workload
    if (w.prompt_tokens, w.sessions) == (prompt_tokens, args.concurrency):
        return plan.predicted.ttft_s + ETALON_TTFT_SLACK_S, ""
    why = (
        f"the plan predicts the first token for {w.prompt_tokens} prompt tokens and {w.sessions} session(s), "
        f"this run sends {prompt_tokens} and {args.concurrency}"
    )
    if args.slo_fluidity is not None:
        raise ConfigError(f"--slo-fluidity needs a first-token deadline: {why}; give --ttft-deadline")
    return None, f"no fluidity-index: {why}; give --ttft-deadline for one"


def write_outputs(args: argparse.Namespace, report: dict, spans) -> int:
    """--json (the report), --spans (the hop spans, msgpack) and --plot (their timeline), each where
    asked: one that cannot be written is named on stderr and the others are still written; 2 then."""
    import sys

    from partition.metrics import json_out

    def write_json(path: Path) -> None:
        path.write_text(json_out.dumps(report, indent=2, default=str))

    def write_spans(path: Path) -> None:
        from partition.metrics.spanlog import write_spans

        write_spans(path, spans)

    def write_plot(path: Path) -> None:
        from partition.metrics.timeline import plot_timeline

        plot_timeline(spans, path)

    failed = 0
    for path, write in ((args.json_out, write_json), (args.spans, write_spans), (args.plot, write_plot)):
        if path is None:
            continue
        try:
            write(_with_folder(path))
        except OSError as error:
            print(f"partition bench: cannot write {path}: {error.strerror or error}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def _with_folder(path: Path) -> Path:
    """`path`, its folder made if missing: outputs are written after the whole run, which a missing
    folder must not throw away."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def slo_from(args: argparse.Namespace):
    from partition.errors import ConfigError
    from partition.metrics.aggregate import Slo

    try:
        return Slo(args.slo_ttft, args.slo_tpot, args.slo_tbt_p99, args.slo_fluidity)
    except ValueError as error:  # Slo's message starts with the field's name; say the flag's
        field, rest = str(error).split(" ", 1)
        flag = {"ttft_s": "ttft", "tpot_s": "tpot", "tbt_p99_s": "tbt-p99", "fluidity_index": "fluidity"}
        raise ConfigError(f"--slo-{flag[field]} {rest}") from None
