"""Run a stage worker: it loads the segment a plan gives it and serves it over gRPC (deploy, serve).

partition worker --listen 0.0.0.0:7001 --name server-a --models-dir /srv/models --token-file token
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from pathlib import Path

from partition.cli.arguments import check_device, output_file, positive_number, whole_number
from partition.types import KV_BUDGET_MIB, MAX_BATCH, check_device_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="address to serve on (port 0: any free port)"
    )
    parser.add_argument("--name", required=True, help="this worker's name in plans, errors and timings")
    parser.add_argument(
        "--threads",
        type=whole_number(zero_means="torch's choice"),
        default=0,
        help="torch intra-op threads (default: torch's choice)",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device for the segment: cpu, cuda, cuda:1 (default: cpu)"
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="the only directory model paths in requests may point into (default: built-in models only)",
    )
    parser.add_argument(
        "--kv-budget-mb",
        type=positive_number("MiB"),
        default=KV_BUDGET_MIB,
        help=f"MiB of KV cache to preallocate at most (default: {KV_BUDGET_MIB})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive_number("seconds"),
        default=600,
        metavar="SECONDS",
        help="free a session's KV slot after this long without a step (default: 600)",
    )
    parser.add_argument(
        "--max-batch",
        type=whole_number(),
        default=MAX_BATCH,
        metavar="N",
        help="compute at most N sessions' decode steps that wait together as one forward "
        f"(1: each alone; default: {MAX_BATCH})",
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain of this worker (enables TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-ca", type=Path, help="PEM CA bundle: require and verify client certificates, verify peers"
    )
    parser.add_argument("--token-file", type=Path, help="file holding the shared token every call must carry")
    parser.add_argument(
        "--grace",
        type=positive_number("seconds", zero_allowed=True),
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, let running calls finish this long (0: end them at once; default: 5)",
    )
    parser.add_argument(
        "--ready-file", type=output_file, help="write {address, port, pid} as JSON here once serving"
    )
    parser.add_argument(
        "--stop-when-stdin-closes",
        action="store_true",
        help="stop gracefully once standard input ends: started with a pipe, the worker does not outlive "
        "the process holding its other end, however that one ends (serve --spawn-local does this)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from partition.errors import ConfigError
    from partition.runtime.stage import WorkerSettings
    from partition.transport.channels import TransportConfig
    from partition.transport.worker import serve_worker

    if args.threads:
        torch.set_num_threads(args.threads)
    check_device(args.device)
    check_device_name(args.name, "--name")
    if args.models_dir is not None and not args.models_dir.is_dir():
        said = "is a file, not a directory" if args.models_dir.exists() else "no such directory"
        raise ConfigError(f"--models-dir {args.models_dir}: {said}")
    if args.tls_cert is None and args.tls_ca is not None:
        raise ConfigError("--tls-ca on a worker requires --tls-cert and --tls-key (the worker serves TLS)")
    settings = WorkerSettings(
        name=args.name,
        models_dir=args.models_dir,
        device=args.device,
        kv_budget_bytes=int(args.kv_budget_mb * 2**20),
        idle_timeout_s=args.idle_timeout,
        max_batch=args.max_batch,
    )
    config = TransportConfig.from_files(args.tls_cert, args.tls_key, args.tls_ca, args.token_file)
    # Said on stderr whatever the log level (stdout stays clean): where it serves, port 0's pick included.
    announce = functools.partial(print, file=sys.stderr, flush=True)
    asyncio.run(
        serve_worker(
            settings, config, args.listen, args.grace, args.ready_file, announce, args.stop_when_stdin_closes
        )
    )
    return 0
