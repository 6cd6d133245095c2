"""Run the whole story on the embedded default model: lab, profile, plan, serve, bench (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="model to split (default: the embedded one)")
    parser.add_argument(
        "--workdir", type=Path, help="where profiles, plan and reports go (default: a temp dir)"
    )
    parser.add_argument(
        "--no-lab", action="store_true", help="local workers without network or CPU emulation"
    )


def run(args: argparse.Namespace) -> int:
    from partition.demo import run_demo

    return run_demo(args.model, args.workdir, use_lab=not args.no_lab)
