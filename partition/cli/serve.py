"""Serve a plan: deploy it on its workers, then generate through the split (serve).

partition serve --plan plan.json --cluster cluster.toml --chat --prompt "What is the capital of France?"
partition serve --plan plan.json --spawn-local --prompt "Once upon a time" --json
Without --prompt, reads one prompt per line from standard input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from partition.cli.prompting import add_prompt_arguments, build_request, prompt_ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, help="plan.json from `partition plan`")
    parser.add_argument("--cluster", type=Path, help="cluster file with each device's `address`")
    parser.add_argument(
        "--spawn-local",
        action="store_true",
        help="start a local worker for every device with no address or nothing listening there",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="start the stages as actors on the Ray cluster at ADDRESS (default: RAY_ADDRESS or the local "
        "one), each on the node advertising resource device:<name>; this process is the edge",
    )
    parser.add_argument(
        "--baseline",
        metavar="NAME",
        help="serve one of the plan's baselines instead (even, memory_proportional, edge_only, best_single_server)",
    )
    add_threads_argument(parser)
    parser.add_argument("--max-context", type=int, default=2048, help="tokens per session (prompt + output)")
    parser.add_argument("--max-sessions", type=int, default=4, help="concurrent sessions per worker")
    add_prompt_arguments(parser, required=False)
    add_transport_arguments(parser)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of spawned workers and the edge (default for the edge: the threads its profile "
        "was measured with, as the plan records them, else its threads in --cluster)",
    )


def use_edge_threads(args: argparse.Namespace, plan) -> None:
    """This process runs the edge's segments: give torch the threads the plan's edge costs were measured
    with (--threads overrides; plans that do not record them fall back to the cluster file)."""
    import torch

    from partition.coordinator.workers import edge_threads

    threads = args.threads or plan.edge_threads or (edge_threads(args.cluster) if args.cluster else None)
    if threads:
        torch.set_num_threads(threads)


def add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", type=Path, help="PEM CA bundle that signed the workers' certificates")
    parser.add_argument("--tls-cert", type=Path, help="client certificate, for workers that require one")
    parser.add_argument("--tls-key", type=Path, help="private key of --tls-cert")
    parser.add_argument("--token-file", type=Path, help="file with the workers' shared token")


def transport_config(args: argparse.Namespace):
    from partition.transport.channels import TransportConfig

    return TransportConfig.from_files(args.tls_cert, args.tls_key, args.tls_ca, args.token_file)


def run(args: argparse.Namespace) -> int:
    from partition.artifacts import load_plan
    from partition.coordinator.topology import split_plan
    from partition.coordinator.workers import cluster_addresses, spawn_missing
    from partition.errors import ConfigError

    plan = load_plan(args.plan)
    use_edge_threads(args, plan)
    if args.baseline:
        from partition.plan.variants import baseline_plan

        plan = baseline_plan(plan, args.baseline)
    if args.ray is not None:
        from partition.ray.stages import ray_stages

        if args.cluster or args.spawn_local:
            raise ConfigError("--ray places the stages itself: drop --cluster and --spawn-local")
        with ray_stages(plan, args.ray, transport_config(args), args.threads) as stages:
            return _serve(args, plan, stages.addresses, stages.transport)
    addresses = cluster_addresses(args.cluster) if args.cluster else {}
    remote = [s.device for s in split_plan(plan).remote]
    spawned = spawn_missing(remote, addresses, plan.model.name, args.threads) if args.spawn_local else []
    try:
        return _serve(args, plan, addresses, transport_config(args))
    finally:
        for worker in spawned:
            worker.stop()


def _serve(args: argparse.Namespace, plan, addresses: dict[str, str], transport) -> int:
    from partition.coordinator.deploy import deploy

    deployment = deploy(
        plan, addresses, transport, max_context=args.max_context, max_sessions=args.max_sessions
    )
    try:
        if args.prompt is not None:
            answer(deployment, args, args.prompt)
        else:
            for line in sys.stdin:
                if line.strip():
                    answer(deployment, args, line.rstrip("\n"))
    finally:
        deployment.close()
    return 0


def _stage_failure(deployment, error):
    """The same failure (code and address kept), named by the stage's device as in the plan, and for a
    worker that went away, what to do."""
    import grpc

    from partition.transport.client import StageCallError

    devices = {a: s.device for a, s in zip(deployment.addresses, deployment.topology.remote, strict=True)}
    device = devices.get(error.address, "")
    details = error.details
    if error.code == grpc.StatusCode.UNAVAILABLE:
        where = f"{device} at {error.address}" if device else error.address
        details += (
            f"; the worker of {where} stopped or cannot be reached: start it again "
            "(or serve with --spawn-local) and send the prompt again"
        )
    return StageCallError(error.code, details, error.address, device)


def answer(deployment, args: argparse.Namespace, prompt: str) -> None:
    from partition.coordinator.session import PipelineSession
    from partition.metrics.spans import link_summaries, stage_summaries
    from partition.model.generation import generate
    from partition.model.tokenizer import load_tokenizer
    from partition.transport.client import StageCallError
    from partition.types import RAW_VALUE_BYTES, RETURN_TOP_K

    tokenizer = load_tokenizer(deployment.source)
    args.prompt = prompt
    ids = prompt_ids(args, tokenizer)
    request = build_request(args, ids, deployment.max_context)
    eos = tuple(set(deployment.source.spec.eos_token_ids) | set(tokenizer.eos_ids))
    session = PipelineSession(deployment, context=request.context, sampling=request.sampling)
    if session.logits_top_k == 0 and deployment.returns_remote_logits:
        vocab = deployment.source.spec.vocab_size
        print(
            f"note: sampling with temperature and no --top-k needs every logit, so the worker holding the head "
            f"sends {RAW_VALUE_BYTES * vocab} bytes per token instead of the plan's top {RETURN_TOP_K}; add --top-k "
            f"{RETURN_TOP_K} (or fewer) to keep the plan's cost, or plan with --head-on-edge",
            file=sys.stderr,
        )

    streamed = False  # some text is on the terminal: an error must start on a line of its own

    def show(chunk: str) -> None:
        nonlocal streamed
        streamed = True
        sys.stdout.write(chunk)
        sys.stdout.flush()

    try:
        result = generate(session.step, request, eos, tokenizer.decode, None if args.json else show)
    except BaseException as error:
        with contextlib.suppress(Exception):  # closing fails the same way; the first error says why
            session.close()
        if streamed:
            sys.stdout.write("\n")
            sys.stdout.flush()
        if isinstance(error, StageCallError):
            raise _stage_failure(deployment, error) from None
        raise
    session.close()
    if not args.json:
        sys.stdout.write("\n")
        return
    links = link_summaries(session.spans)
    out = {
        "plan_id": deployment.plan.plan_id,
        "epoch": deployment.plan.epoch,
        "text": result.text,
        "token_ids": result.token_ids,
        "prompt_token_ids": result.prompt_token_ids,
        "finish_reason": result.finish_reason,
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
            for link in links
        ],
        "stages": [
            {"device": s.device, "compute_p50_s": s.compute_p50_s, "queue_p50_s": s.queue_p50_s}
            for s in stage_summaries(session.spans)
        ],
        "predicted": {"ttft_s": deployment.plan.predicted.ttft_s, "tpot_s": deployment.plan.predicted.tpot_s},
    }
    print(json.dumps(out))
