"""Choose the split of the model over the cluster's devices and write plan.json.

Reads the cluster file and the device profiles it names, finds the optimal chain for the workload
(--prompt-tokens, --new-tokens, --sessions, --objective), prints it beside the even,
memory-proportional, edge-only and best-single-server splits, and writes the plan.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from partition.cli.arguments import output_file, whole_number
from partition.types import EPOCH_MAX, RETURN_TOP_K

# What a server must save to be used, as a fraction of the objective. Profiles of alike devices
# differ by about this much from run to run (see partition/plan/simplify.py); the library's
# make_plan keeps the exact optimum (0) unless asked.
DEFAULT_MIN_GAIN = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="model the profiles were measured with (name or digest)"
    )
    parser.add_argument("--cluster", type=Path, help="cluster TOML file (devices, profiles, links); or --ray")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="profile the live Ray cluster first (every node advertising device:<name>, and its links), "
        "then plan on it; the profiles go beside --out",
    )
    parser.add_argument("--edge", help="with --ray: the edge device (default: the device of this node)")
    parser.add_argument(
        "--objective",
        choices=("latency", "throughput"),
        default="latency",
        help="latency: TTFT + (D-1) x TPOT of a request; throughput: decode round of S micro-batches",
    )
    parser.add_argument(
        "--prompt-tokens",
        type=whole_number(1),
        default=128,
        metavar="P",
        help="tokens per prompt (default 128)",
    )
    parser.add_argument(
        "--new-tokens",
        type=whole_number(1),
        default=128,
        metavar="D",
        help="tokens generated per request (default 128)",
    )
    parser.add_argument(
        "--sessions", type=whole_number(1), default=1, metavar="S", help="sessions served at once (default 1)"
    )
    parser.add_argument(
        "--codecs",
        nargs="+",
        metavar="NAME",
        help="codecs a hop may use (default: all in the table), e.g. --codecs raw fp16",
    )
    parser.add_argument(
        "--codec-table",
        type=Path,
        metavar="JSON",
        help="measured codec table (benchmarks/codecs.py output) instead of the built-in estimates",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="let servers hold embed too (token ids leave the edge)"
    )
    parser.add_argument(
        "--head-on-edge",
        action="store_true",
        help=f"keep the head on the edge (every logit local); by default a server may hold it and return the top "
        f"{RETURN_TOP_K} logits, exact for greedy and top-k <= {RETURN_TOP_K} sampling",
    )
    parser.add_argument(
        "--min-gain",
        type=float,
        default=DEFAULT_MIN_GAIN,
        metavar="F",
        help="a server must save more than this fraction of the objective to be used: the optimum's "
        "servers that save less are left out, for a plan within F of it on fewer devices "
        f"(default {DEFAULT_MIN_GAIN}: below what profiles can tell apart; 0: the exact optimum)",
    )
    parser.add_argument(
        "--epoch", type=int, help="plan epoch (default: the previous --out plan's epoch + 1, or 1)"
    )
    parser.add_argument(
        "--out", type=output_file, default="plan.json", help="where to write the plan (default plan.json)"
    )


def _check_model(asked: str, profiled, cluster_file) -> None:
    """`asked` is the model the profiles were measured for: by its name, its digest, or a file (or other
    name) that holds the same weights. ConfigError otherwise, saying which to give."""
    from partition.errors import ConfigError, PartitionError
    from partition.model import resolve_model

    if asked in (profiled.name, profiled.digest):
        return
    measured = f"the profiles in {cluster_file} were measured for model {profiled.name!r} (digest {profiled.digest[:12]})"
    try:
        digest = resolve_model(asked).digest
    except PartitionError as error:  # neither a built-in name nor a model file here
        raise ConfigError(f"{measured}; --model {asked!r}: {error}") from None
    if digest != profiled.digest:
        raise ConfigError(
            f"{measured}, not {asked!r} (digest {digest[:12]}): plan with --model {profiled.name} or profile "
            f"the devices with --model {asked}"
        )


def run(args: argparse.Namespace) -> int:
    from partition.artifacts import load_plan, save_plan
    from partition.errors import ConfigError
    from partition.plan import DEFAULT_CODECS, load_cluster, load_codec_table, make_plan, select_codecs
    from partition.plan.report import format_plan
    from partition.types import Pinning, Workload

    if args.edge is not None and args.ray is None:
        raise ConfigError(
            "--edge names the edge of a Ray cluster: use it with --ray (a cluster file's edge is its role)"
        )
    if args.ray is not None:
        from partition.ray.profile import profile_ray_cluster

        # a folder of the plan's own: the user's cluster.toml and profiles beside --out stay as they are
        profiled = args.out.parent / f"{args.out.stem}.ray-cluster" / "cluster.toml"
        args.cluster = profile_ray_cluster(args.ray, args.model, profiled, args.edge)
        print(f"profiled the Ray cluster into {args.cluster}")
    elif args.cluster is None:
        raise ConfigError(
            "give --cluster FILE (a cluster file with profiles) or --ray to profile a Ray cluster"
        )
    cluster = load_cluster(args.cluster)
    model = cluster.model
    _check_model(args.model, model, args.cluster)
    try:
        workload = Workload(args.prompt_tokens, args.new_tokens, args.sessions, args.objective)
    except ValueError as error:
        raise ConfigError(str(error).replace("_", "-", 1)) from None
    check_fits_context(workload, model.name)
    table = load_codec_table(args.codec_table) if args.codec_table else DEFAULT_CODECS
    names = [name for item in args.codecs for name in item.split(",") if name] if args.codecs else None
    codecs = select_codecs(table, names)
    previous = None
    if args.out.exists():
        try:
            previous = load_plan(args.out)
        except ConfigError as error:  # not a plan (the cluster file, a profile, ...), or a broken one
            raise ConfigError(
                f"--out {args.out} exists and is not a plan this can replace ({error}); choose another "
                "--out, or remove it"
            ) from None
    epoch = args.epoch
    if epoch is None:
        epoch = previous.epoch + 1 if previous is not None and previous.model.digest == model.digest else 1
    if not 1 <= epoch <= EPOCH_MAX:
        raise ConfigError(f"--epoch must be in [1, {EPOCH_MAX}], got {epoch}")
    pin = Pinning(embed=not args.no_pin, head=args.head_on_edge)
    plan = make_plan(cluster, workload, codecs, pin=pin, epoch=epoch, min_gain=args.min_gain)
    save_plan(plan, args.out)
    print(format_plan(plan, cluster, codecs))
    print(f"\nwrote {args.out}")
    return 0


def check_fits_context(workload, model_name: str) -> None:
    """ConfigError when a session of `workload` (prompt + new tokens) is longer than the model's context:
    no deployment could serve it. Without the model on this machine, its context is not known here and
    deploy says it instead."""
    from partition.errors import ConfigError, ModelNotFoundError
    from partition.model import resolve_model

    try:
        limit = resolve_model(model_name).spec.max_context
    except ModelNotFoundError:
        return
    if workload.kv_tokens > limit:
        raise ConfigError(
            f"--prompt-tokens {workload.prompt_tokens} + --new-tokens {workload.new_tokens} = "
            f"{workload.kv_tokens} tokens per session, over {model_name}'s context of {limit}; plan a shorter workload"
        )
