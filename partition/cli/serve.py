"""Serve a plan: deploy it on its workers, then generate through the split (serve).

partition serve --plan plan.json --cluster cluster.toml --chat --prompt "What is the capital of France?"
partition serve --plan plan.json --spawn-local --prompt "Once upon a time" --json
partition serve --plan plan.json --cluster cluster.toml --http 127.0.0.1:8000   # OpenAI-compatible API
Without --prompt or --http, reads one prompt per line from standard input.
With a cluster file that names each device's profile (the one `partition profile` writes), a worker
that stays away is planned around: the plan is made again without it, deployed, and written beside
the plan file as plan.epoch<N>.json (--no-replan: the request ends instead); once its worker listens
again, the plan is made with it again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from partition.cli.arguments import non_empty, positive_number, whole_number
from partition.cli.prompting import (
    add_prompt_arguments,
    build_request,
    check_chat_flags,
    logprobs_json,
    prompt_ids,
)
from partition.plan.baselines import BASELINES
from partition.types import MAX_SESSIONS

log = logging.getLogger(__name__)

# The shortest --reconnect-wait: a channel to a worker that went away tries again at most 2 s apart
# (transport.channels.RECONNECT_MAX_MS), so a shorter wait could miss one that is back; and a margin.
RECONNECT_WAIT_MIN_S = 3.0
# What a request that lost one of serve's own local workers for good tells its user.
SPAWNED_LOST_ADVICE = (
    "serve starts its local workers again when they stop, and could not start this one (serve's log says "
    "why; it tries again after a while): send the prompt again"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", type=Path, required=True, help="plan.json from `partition plan`")
    parser.add_argument(
        "--cluster",
        type=Path,
        help="cluster file with each device's `address`; with each device's profile too (the file "
        "`partition profile` writes), a worker that stays away is planned around (with --ray: the "
        "profiles only, the addresses are the stage actors')",
    )
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
        help="serve one of the plan's baselines instead (" + ", ".join(BASELINES) + ")",
    )
    parser.add_argument(
        "--no-replan",
        action="store_true",
        help="end a request when a worker stays away, instead of planning again without it and with it "
        "once it is back (re-planning needs --cluster with the devices' profiles)",
    )
    parser.add_argument(
        "--reconnect-wait",
        type=positive_number("seconds", smallest=RECONNECT_WAIT_MIN_S),
        metavar="S",
        help="seconds a worker that went away is waited for (a supervisor's restart) before its request "
        "ends or is planned around (default 8)",
    )
    parser.add_argument(
        "--recheck",
        type=positive_number("seconds", zero_allowed=True),
        metavar="S",
        help="seconds between looks for a device planned around whose worker listens again, with a "
        "profiled --cluster (default 10)",
    )
    add_threads_argument(parser)
    parser.add_argument(
        "--max-context",
        type=whole_number(1),
        default=2048,
        help="tokens per session (prompt + output; default 2048)",
    )
    parser.add_argument(
        "--max-sessions",
        type=whole_number(1, maximum=MAX_SESSIONS),
        default=4,
        help=f"concurrent sessions per worker (default 4, at most {MAX_SESSIONS})",
    )
    add_prompt_arguments(parser, required=False)
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) at "
        "HOST:PORT until stopped (port 0: any free port; the address is printed)",
    )
    parser.add_argument(
        "--served-model-name",
        nargs="+",
        metavar="NAME",
        type=non_empty("a request could not give it"),
        default=[],
        help="the names HTTP requests give the model (the first is the one replies give; default: the "
        "plan's model name), as vLLM's --served-model-name (with --http)",
    )
    parser.add_argument(
        "--http-token-file",
        type=Path,
        help="file with the API key clients must send as `Authorization: Bearer KEY` (with --http)",
    )
    parser.add_argument(
        "--http-allowed-origin",
        action="append",
        default=[],
        type=web_origin,
        metavar="ORIGIN",
        help="a web origin (scheme://host[:port]) whose pages' scripts may call the API of --http "
        "(CORS; repeatable; '*': any; default: none)",
    )
    add_transport_arguments(parser)


def web_origin(text: str) -> str:
    """An origin as browsers send it: scheme://host[:port], no path; or '*'."""
    if text == "*":
        return text
    scheme, sep, rest = text.rstrip("/").partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an origin; give scheme://host[:port] as the browser's Origin header says "
            "it (e.g. http://localhost:3000), or '*'"
        )
    return text.rstrip("/")


web_origin.__name__ = "origin"


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=whole_number(zero_means="the default"),
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

    check_chat_flags(args)
    plan = load_plan(args.plan)
    http = _http_server(args)  # listening before workers start: a taken port fails first
    try:
        return _run(args, plan, http)
    finally:
        if http is not None:
            http.server_close()


def _run(args: argparse.Namespace, plan, http) -> int:
    from partition.coordinator.topology import split_plan
    from partition.coordinator.workers import cluster_addresses, kv_budget_mib, spawn_missing

    use_edge_threads(args, plan)
    labels = {}  # said beside the plan id in every report
    if args.baseline:
        from partition.plan.variants import baseline_plan

        labels = {"baseline": args.baseline, "base_plan_id": plan.plan_id}  # a baseline has its own id
        plan = baseline_plan(plan, args.baseline)
    profiled = _profiled_cluster(args, plan)
    check_served_memory(args, plan, profiled)
    if args.ray is not None:
        return _run_on_ray(args, plan, http, labels, profiled)
    addresses = cluster_addresses(args.cluster) if args.cluster else {}
    remote = [s.device for s in split_plan(plan).remote]
    spawned = None
    if args.spawn_local:
        budget = kv_budget_mib(plan, args.max_context, args.max_sessions)
        spawned = spawn_missing(remote, addresses, plan.model.name, args.threads, budget)
    try:
        restart = spawned.restart_dead if spawned is not None else None  # a worker of ours died: again
        transport = transport_config(args)
        failover = _failover(args, profiled, addresses, transport)
        advice = SPAWNED_LOST_ADVICE if spawned is not None else None
        return _serve(args, plan, addresses, transport, http, labels, restart, failover, lost_advice=advice)
    finally:
        if spawned is not None:
            spawned.stop()


def _run_on_ray(args: argparse.Namespace, plan, http, labels, profiled) -> int:
    """serve --ray: the stages as Ray actors; a dead one started again where it was, and with the
    cluster's profiles (--cluster), one lost with its node planned around."""
    from partition.errors import ConfigError
    from partition.ray.stages import ray_stages
    from partition.ray.stdout import answers_stream

    if args.spawn_local:
        raise ConfigError("--ray places the stages itself: drop --spawn-local")
    # with the cluster's profiles, every server gets a stage actor: a re-plan may give it layers
    cluster = _replan_cluster(args, profiled)
    if args.cluster is not None and cluster is None and not (args.baseline or args.no_replan):
        raise ConfigError(
            f"with --ray, --cluster is for re-planning: the profiles `partition profile --ray` writes "
            f"(its addresses are not used), and {args.cluster} gives none that fit the plan; drop it"
        )
    spare = [device.name for device in cluster.servers] if cluster is not None else []
    with (
        answers_stream() as out,  # first: Ray's start and end print on stdout too
        ray_stages(plan, args.ray, transport_config(args), args.threads, spare=spare) as stages,
    ):
        failover = _failover(args, profiled, stages.addresses, stages.transport, revive=stages.revive)
        # a stage actor that died is started again on its node, at its address, and the request
        # resumes; one whose node is gone is planned around (with the profiles), and taken back in a
        # new actor once a node advertises its device again
        advice = "serve could not start its stage actor again (see why above): run serve again"
        return _serve(
            args, plan, stages.addresses, stages.transport, http, labels, stages.restart_dead, failover,
            lost_advice=advice, out=out,
        )  # fmt: skip


def _http_server(args: argparse.Namespace):
    """The API server of --http, listening but not yet answering (None without --http): checks that it
    goes without --prompt and --json, reads its key file, and binds the port."""
    from partition.errors import ConfigError
    from partition.transport.channels import read_token
    from partition.types import check_address

    if args.http is None:
        if args.http_token_file is not None:
            raise ConfigError("--http-token-file protects the API of --http: give --http HOST:PORT too")
        if args.http_allowed_origin:
            raise ConfigError("--http-allowed-origin opens the API of --http to web pages: give --http too")
        if args.served_model_name:
            raise ConfigError("--served-model-name names the model to HTTP clients: give --http too")
        return None
    check_address(args.http, listening=True)
    if args.prompt is not None or args.json:
        raise ConfigError("--http serves requests from HTTP clients: drop --prompt and --json")
    token = read_token(args.http_token_file, "--http-token-file") if args.http_token_file else None
    from partition.api.server import ApiServer

    host, _, port = args.http.rpartition(":")
    try:
        names = tuple(dict.fromkeys(args.served_model_name))  # each once, in the order given
        return ApiServer(host.strip("[]"), int(port), token, tuple(args.http_allowed_origin), names)
    except OSError as error:
        raise ConfigError(f"--http {args.http}: cannot listen there ({error.strerror})") from None


def _failover(args: argparse.Namespace, profiled, addresses: dict[str, str], transport, revive=None):
    """What re-plans around a worker that stays away (see _replan_cluster), or None (such a worker then
    ends the request); `revive`: how --ray starts a stage again on a device back (Failover's)."""
    from partition.coordinator.replan import RECHECK_S, Failover

    cluster = _replan_cluster(args, profiled)
    if cluster is None:
        return None
    recheck_s = RECHECK_S if args.recheck is None else args.recheck
    return Failover(cluster, addresses, transport, args.plan, revive=revive, recheck_s=recheck_s)


def _replan_cluster(args: argparse.Namespace, profiled):
    """The devices and profiles a re-plan is made from: `profiled` (see _profiled_cluster) unless
    --no-replan is given or a baseline is served (it is served to be measured as it is); else None."""
    return None if args.no_replan or args.baseline else profiled


def _profiled_cluster(args: argparse.Namespace, plan):
    """--cluster with every device's profile, when it has them and fits the plan; else None, and what
    is not done then logged: the memory check of check_served_memory, and re-planning."""
    from partition.coordinator.cluster_devices import read_devices
    from partition.coordinator.replan import check_cluster_fits
    from partition.errors import ConfigError
    from partition.plan import load_cluster

    if args.cluster is None:
        return None
    without = "the devices' memory is not checked against --max-context"
    if not (args.no_replan or args.baseline):
        without += "; cannot re-plan around a lost worker: one that stays away ends the request"
    if not all(isinstance(device.table.get("profile"), str) for device in read_devices(args.cluster)):
        log.info("%s names no profiles: %s", args.cluster, without)
        return None
    try:
        cluster = load_cluster(args.cluster)
        check_cluster_fits(plan, cluster)
    except ConfigError as error:
        log.warning("%s (%s)", without, error)
        return None
    return cluster


def check_served_memory(args: argparse.Namespace, plan, profiled) -> None:
    """ConfigError when a device of `profiled` (None: nothing to check against) cannot hold its stages
    with the KV cache serving allocates: the plan checked memory for its own workload, and
    --max-context x --max-sessions may ask for more."""
    from partition.errors import ConfigError
    from partition.plan.validate import serving_problem

    if profiled is None:
        return
    problem = serving_problem(profiled, plan.stages, args.max_context, args.max_sessions)
    if problem:
        w = plan.workload
        raise ConfigError(
            f"{problem}; the plan was made for {w.sessions} session(s) of {w.kv_tokens} tokens: serve with "
            f"--max-context {w.kv_tokens} --max-sessions {w.sessions}, or plan for the sessions you serve"
        )


def _serve(
    args: argparse.Namespace,
    plan,
    addresses: dict[str, str],
    transport,
    http,
    labels,
    restart=None,
    failover=None,
    lost_advice: str | None = None,
    out=None,
) -> int:
    from partition.coordinator.answer import LOST_ADVICE, Answerer
    from partition.coordinator.deploy import deploy
    from partition.transport.channels import RECONNECT_WAIT_S

    if failover is not None:  # a worker away at the start is planned around, as one lost later
        deployment = failover.deploy(plan, args.max_context, args.max_sessions)
    else:
        deployment = deploy(
            plan, addresses, transport, max_context=args.max_context, max_sessions=args.max_sessions
        )
    try:
        answerer = Answerer(
            deployment,
            labels,
            restart,
            failover=failover,
            lost_advice=lost_advice or LOST_ADVICE,
            reconnect_wait_s=RECONNECT_WAIT_S if args.reconnect_wait is None else args.reconnect_wait,
        )
    except BaseException:
        deployment.close()
        raise
    try:
        if http is not None:
            _serve_http(http, answerer)
        elif args.prompt is not None:
            answer(answerer, args, args.prompt, out)
        else:
            return _answer_lines(answerer, args, sys.stdin, out)
    finally:
        answerer.close()  # and every deployment a re-plan replaced
    return 0


def _answer_lines(answerer, args: argparse.Namespace, lines, out=None) -> int:
    """One answer per non-empty line. A prompt refused for itself (too long, not UTF-8) is named with
    its line and the next ones are answered; the exit code then says some were refused (2)."""
    from partition.errors import ConfigError

    refused = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            answer(answerer, args, line.rstrip("\n"), out)
        except ConfigError as error:
            refused += 1
            print(f"partition serve: error: line {number}: {error}", file=sys.stderr, flush=True)
    if refused:
        print(f"partition serve: {refused} prompt(s) refused, the others answered", file=sys.stderr)
        return 2
    return 0


def _serve_http(server, answerer) -> None:
    """The OpenAI-compatible API until SIGTERM, after which the requests under way finish (up to
    DRAIN_TIMEOUT_S), or Ctrl-C, which stops at once (KeyboardInterrupt)."""
    import signal
    import threading

    server.attach(answerer)
    previous = signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        plan = answerer.deployment.plan
        print(
            f"partition serve: plan {plan.plan_id} epoch {plan.epoch} ({plan.model.name}) answers at {server.url} "
            "(OpenAI-compatible: /chat/completions, /completions, /models); SIGTERM stops after the requests "
            "under way, Ctrl-C at once",
            file=sys.stderr,
            flush=True,
        )
        server.serve_forever()
        if not server.drain():
            print("partition serve: stopped with requests still under way", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _session_limit(args: argparse.Namespace, deployment) -> tuple[str, str]:
    """What holds a session's tokens and what would let a longer prompt fit, said when one does not."""
    if deployment.max_context < args.max_context:  # deploy lowered --max-context to the model's context
        return f"{deployment.plan.model.name}'s context", "shorten it"
    return "a session (--max-context)", "shorten it or serve with a larger --max-context"


def answer(answerer, args: argparse.Namespace, prompt: str, out=None) -> None:
    """One prompt through the split: text streamed to `out` (stdout), or one JSON object with --json."""
    from partition.metrics import json_out
    from partition.types import RETURN_TOP_K

    out = out or sys.stdout

    args.prompt = prompt
    ids = prompt_ids(args, answerer.tokenizer)
    limit, advice = _session_limit(args, answerer.deployment)
    request = build_request(args, ids, answerer.deployment.max_context, limit, advice)
    note = answerer.logits_note(request.sampling, f"--top-k {RETURN_TOP_K}")
    if note:
        print(f"note: {note}", file=sys.stderr)
    if len(ids) + request.max_new_tokens > request.context:
        print(
            f"note: {limit} holds {request.context} tokens: after the prompt's {len(ids)}, the answer stops "
            f"at {request.context - len(ids)} new tokens, not --max-new-tokens {request.max_new_tokens}",
            file=sys.stderr,
        )

    streamed = False  # some text is on the terminal: an error must start on a line of its own

    def show(chunk: str) -> None:
        nonlocal streamed
        streamed = True
        out.write(chunk)
        out.flush()

    try:
        done = answerer.answer(request, None if args.json else show)
    except BaseException:
        if streamed:
            out.write("\n")
            out.flush()
        raise
    if not args.json:
        out.write("\n")
        out.flush()
        return
    result, report = done.result, done.report()
    document = {
        "plan_id": report.pop("plan_id"),  # first, as it always was: log readers look for '{"plan_id"'
        "epoch": report.pop("epoch"),
        "text": result.text,
        "token_ids": result.token_ids,
        "prompt_token_ids": result.prompt_token_ids,
        "finish_reason": result.finish_reason,
        **report,
    }
    if request.logprobs is not None:
        document["logprobs"] = logprobs_json(result, answerer.tokenizer)
    print(json_out.dumps(document), file=out, flush=True)
