"""What the benchmarks that lose a worker mid-request share (resume.py, replan.py; serve): their
options, the prompt every request continues, and the table of request times they print."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def parse_args(doc: str, argv: list[str] | None, json_default: str, kill_help: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--kill-at", type=int, default=32, help=kill_help)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the edge and the workers")
    parser.add_argument("--json", type=Path, default=Path(json_default))
    args = parser.parse_args(argv)
    if not 0 < args.kill_at < args.tokens:
        parser.error("--kill-at must lie between 0 and --tokens")
    return args


def print_medians(runs: dict[str, list[float]]) -> dict[str, float]:
    """Print and return each kind of request's median time from its start to its last token."""
    median = {name: statistics.median(times) for name, times in runs.items()}
    print(f"  {'request':<16}{'start to last token s':>24}")
    for name, value in median.items():
        print(f"  {name:<16}{value:>24.2f}")
    return median


def write_report(
    args: argparse.Namespace, runs: dict[str, list[float]], median: dict[str, float], **extra
) -> None:
    """The JSON of one run: the options, the machine, every request's time and their medians, `extra`."""
    import json
    import os
    import platform

    report = {
        "model": "smollm2-135m",
        "tokens": args.tokens,
        "kill_at": args.kill_at,
        "threads": args.threads,
        "rounds": args.rounds,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "request_s": runs,
        "median_request_s": median,
        **extra,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))


def timed(
    runs: dict[str, list[float]],
    texts: dict[str, set[str]],
    name: str,
    answer: Callable[..., Any],
    *args,
    **kwargs,
):
    """`answer(*args, **kwargs)` (it returns an Answer), its time and text recorded under `name`."""
    started = time.perf_counter()
    result = answer(*args, **kwargs)
    runs[name].append(time.perf_counter() - started)
    texts[name].add(result.result.text)
    return result
