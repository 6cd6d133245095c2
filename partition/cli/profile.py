"""Measure what each unit of the model costs on this machine and write the device profile (JSON).

Times prefill at several prompt lengths and one decode step at several context lengths for the
embedding, a block and the head, with warm-up and repeats, and fits them; records weight, KV-cache
and activation bytes. Profiles are cached by model, device, dtype and threads (--refresh re-measures).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from partition.cli.arguments import check_device, output_file, positive_number, whole_number
from partition.cli.serve import add_transport_arguments, transport_config
from partition.types import WEIGHT_DTYPES, check_device_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="built-in name, Hugging Face directory or .gguf file")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="profile every node of a Ray cluster that advertises device:<name> (and the links between them); "
        "writes a cluster file (--out, default cluster.toml) and a profile per device",
    )
    parser.add_argument("--edge", help="with --ray: the edge device (default: the device of this node)")
    parser.add_argument(
        "--cluster",
        type=Path,
        help="profile every device of this cluster file through its worker and measure every link; "
        "writes <name>.json and a profiled cluster file (--out, default <cluster>.profiled.toml)",
    )
    parser.add_argument(
        "--threads",
        type=whole_number(),
        help="torch threads to measure with (default: torch's); with --cluster, those of an edge that has no "
        "worker and declares no threads (workers measure with their own --threads)",
    )
    # this device only: with --cluster or --ray each device is named by the cluster and measures float32
    # on its worker's own device and cache, as it serves
    parser.add_argument("--dtype", choices=WEIGHT_DTYPES, help="default float32")
    parser.add_argument("--device", help="cpu (default) or cuda[:N]")
    parser.add_argument("--name", help="device name recorded in the profile (default: the hostname)")
    parser.add_argument("--prefill-lengths", type=int, nargs="+", metavar="P", help="prompt lengths to time")
    parser.add_argument("--context-lengths", type=int, nargs="+", metavar="C", help="decode contexts to time")
    parser.add_argument("--repeats", type=int, help="timed runs per point (default 5)")
    parser.add_argument("--warmup", type=int, help="untimed runs per point first (default 2)")
    parser.add_argument(
        "--min-time",
        type=positive_number("seconds", zero_allowed=True),
        metavar="S",
        help="seconds per sample of back-to-back calls (for CPU quotas)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="folder of cached profiles (default $PARTITION_CACHE_DIR/profiles, else ~/.cache/partition/profiles)",
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="measure again even if a cached profile exists (with --cluster or --ray: on every device)",
    )
    parser.add_argument("--out", type=output_file, help="where to write (default device.json)")
    add_transport_arguments(parser)  # with --cluster: the credentials the workers ask for


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from partition.artifacts import save_profile
    from partition.errors import ConfigError
    from partition.profile import ProfileSettings, profile_device

    settings = ProfileSettings()
    overrides = {
        "prefill_lengths": tuple(args.prefill_lengths) if args.prefill_lengths else None,
        "context_lengths": tuple(args.context_lengths) if args.context_lengths else None,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "min_time_s": args.min_time,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    refuse_unused(args)
    if args.ray is not None:
        from partition.ray.profile import profile_ray_cluster

        out = args.out or Path("cluster.toml")
        written = profile_ray_cluster(
            args.ray, args.model, out, args.edge, args.threads or 0, settings, refresh=args.refresh
        )
        print(written.read_text())
        print(f"wrote {written} and a profile per device beside it")
        return 0
    credentials = (args.tls_ca, args.tls_cert, args.tls_key, args.token_file)
    if args.cluster is None and any(credentials):
        raise ConfigError(
            "--tls-ca, --tls-cert, --tls-key and --token-file reach workers: use them with --cluster"
        )
    if args.cluster is not None:
        from partition.coordinator.profile_cluster import profile_cluster

        out = args.out or args.cluster.with_suffix(".profiled.toml")
        written = profile_cluster(
            args.cluster,
            args.model,
            out,
            transport=transport_config(args),
            settings=settings,
            refresh=args.refresh,
            threads=args.threads,
        )
        print(written.read_text())
        print(f"wrote {written} and a profile per device beside it")
        return 0
    args.out = args.out or Path("device.json")
    device = args.device or "cpu"
    check_device(device)
    if args.name is not None:  # the cluster file will name the device by it: refused there otherwise
        check_device_name(args.name, "--name")
    profile = profile_device(
        args.model,
        settings,
        dtype=args.dtype or "float32",
        threads=args.threads,
        device=device,
        name=args.name,
        cache_dir=args.cache_dir,
        refresh=args.refresh,
    )
    save_profile(profile, args.out)
    print(format_profile(profile))
    print(f"\nwrote {args.out}")
    return 0


def refuse_unused(args: argparse.Namespace) -> None:
    """ConfigError for a flag the chosen mode would not use: it must not pass as if it had."""
    from partition.errors import ConfigError

    if args.ray is not None and args.cluster is not None:
        raise ConfigError("--ray profiles the Ray cluster's devices, --cluster those of a file: give one")
    if args.edge is not None and args.ray is None:
        raise ConfigError("--edge names the edge of a Ray cluster: use it with --ray")
    mode = "--ray" if args.ray is not None else "--cluster" if args.cluster is not None else None
    local = {
        "--dtype": args.dtype,
        "--device": args.device,
        "--name": args.name,
        "--cache-dir": args.cache_dir,
    }
    given = [flag for flag, value in local.items() if value is not None]
    if mode and given:
        raise ConfigError(
            f"{', '.join(given)} set how this machine alone is profiled; with {mode} every device is profiled "
            "by its worker, named by the cluster, in float32 as it serves: drop them"
        )


def format_profile(profile) -> str:
    d = profile.device
    lines = [
        f"{profile.model.name} ({profile.model.n_blocks} blocks, {profile.dtype}) on {d.name}: {d.cpu_model}, "
        f"{d.threads} thread(s){', ' + d.cuda_device if d.cuda_device else ''}, {d.memory_bytes / 1e9:.1f} GB available",
        "",
        f"{'unit':<6} {'prefill s = c0 + c1 P + c2 P^2':<34} {'decode s = c0 + c1 context':<28} "
        f"{'weights':>10} {'KV B/tok':>9} {'out B/tok':>9} {'spread':>7}",
    ]
    for cost in (profile.embed, profile.block, profile.head):
        p, q = cost.prefill, cost.decode
        lines.append(
            f"{cost.kind:<6} {f'{p.c0 * 1e3:.3f} ms + {p.c1 * 1e6:.2f} us P + {p.c2 * 1e9:.2f} ns P^2':<34} "
            f"{f'{q.c0 * 1e3:.3f} ms + {q.c1 * 1e9:.2f} ns c':<28} {cost.weight_bytes / 1e6:>8.1f}MB "
            f"{cost.kv_bytes_per_token:>9} {cost.activation_bytes_per_token:>9} "
            f"{max(cost.prefill_spread, cost.decode_spread):>6.0%}"
        )
    return "\n".join(lines)
