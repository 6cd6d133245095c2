"""Decode steps of concurrent sessions batched on the workers, against each step alone (serve).

    python benchmarks/batching.py [--concurrency 4] [--requests 8] [--rounds 2] [--threads 1]
                                  [--json out/batching.json]

One machine, real worker processes on 127.0.0.1, `partition bench` as the client (the edge's segment
in its process). Two splits of SmolLM2: one server (phone [0,1) -> server-a [1,32), the server holding
the head), and two (phone [0,1) -> server-a [1,16) -> server-b [16,32)). Each is run with the workers
started with `--max-batch 1` (every step alone) and with `--max-batch N` (decode steps of sessions
that wait together as one forward), in alternating rounds so that a shared host's load hits both;
--concurrency requests at a time, all of the plan's prompt and new tokens. Reports each run's
throughput and TPOT (medians over the rounds), how many sessions each server computed per forward on
average, and the batched/alone throughput ratio, per split.
Ends with one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from partition.artifacts import save_plan
from partition.model import resolve_model
from partition.plan.synthetic import chosen_split_plan
from partition.transport.local import spawn_workers, stop_workers
from partition.types import ModelRef, Segment, Stage, Workload

REPO = Path(__file__).resolve().parents[1]

SPLITS = {
    "one server": [("phone", 0, 1, "raw"), ("server-a", 1, 32, "raw")],
    "two servers": [("phone", 0, 1, "raw"), ("server-a", 1, 16, "raw"), ("server-b", 16, 32, "raw")],
}


def split_plan(source, split):
    """The plan of `split` (device, start, end, codec) for 32 prompt tokens and 48 new, its predictions
    from synthetic profiles (this benchmark compares runs, not predictions)."""
    model = ModelRef(source.name, source.digest, source.spec.n_blocks)
    chain = tuple(Stage(device, Segment(start, end), codec) for device, start, end, codec in split)
    return chosen_split_plan(model, chain, Workload(prompt_tokens=32, new_tokens=48), "phone")


def run_bench(split, max_batch: int, args, workdir: Path) -> dict:
    """Workers with --max-batch, then `partition bench` over them: its JSON report."""
    servers = sorted({device for device, *_ in split if device != "phone"})
    extra = ("--threads", str(args.threads), "--max-batch", str(max_batch))
    workers = spawn_workers(servers, extra_args=extra)
    try:
        cluster = workdir / "cluster.toml"
        cluster.write_text(
            "".join(
                f'[[device]]\nname = "{w.name}"\nrole = "server"\naddress = "{w.address}"\n' for w in workers
            )
        )
        out = workdir / f"bench-{max_batch}.json"
        command = [sys.executable, "-m", "partition", "bench", "--plan", str(workdir / "plan.json"),
                   "--cluster", str(cluster), "--threads", str(args.threads), "--requests", str(args.requests),
                   "--concurrency", str(args.concurrency),
                   "--json", str(out)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"bench failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())
    finally:
        stop_workers(workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--json", type=Path, default=REPO / "out" / "batching.json")
    args = parser.parse_args()
    source = resolve_model("smollm2-135m")
    results = {}
    for name, split in SPLITS.items():
        with tempfile.TemporaryDirectory(prefix="partition-batching-") as folder:
            workdir = Path(folder)
            save_plan(split_plan(source, split), workdir / "plan.json")
            runs = {1: [], args.max_batch: []}
            for round_ in range(args.rounds):
                order = [1, args.max_batch] if round_ % 2 == 0 else [args.max_batch, 1]
                for max_batch in order:
                    report = run_bench(split, max_batch, args, workdir)
                    metrics = report["metrics"]
                    # sessions per forward on each server, over the decode steps: what batching did
                    batches = {
                        s["device"]: s["batch_mean"]
                        for s in report["stages_measured"]
                        if s["device"] != "phone"
                    }
                    runs[max_batch].append(
                        {
                            "tokens_per_s": metrics["throughput_tokens_per_s"],
                            "tpot_s": metrics["tpot_s"]["p50"],
                            "batch_mean": batches,
                        }
                    )
                    said = ", ".join(f"{device} {mean:.2f}" for device, mean in batches.items())
                    print(f"{name}, --max-batch {max_batch}: {metrics['throughput_tokens_per_s']:.1f} tokens/s, "
                          f"TPOT p50 {metrics['tpot_s']['p50'] * 1e3:.1f} ms, sessions per forward: {said}",
                          flush=True)  # fmt: skip
            summary = {
                max_batch: {
                    "tokens_per_s": statistics.median(r["tokens_per_s"] for r in taken),
                    "tpot_s": statistics.median(r["tpot_s"] for r in taken),
                    "runs": taken,
                }
                for max_batch, taken in runs.items()
            }
            ratio = summary[args.max_batch]["tokens_per_s"] / summary[1]["tokens_per_s"]
            results[name] = {
                "alone": summary[1],
                "batched": summary[args.max_batch],
                "throughput_ratio": ratio,
            }
    print(
        f"\n{'split':<14}{'alone tok/s':>13}{'batched tok/s':>15}{'ratio':>8}{'alone TPOT':>12}{'batched TPOT':>14}"
    )
    for name, r in results.items():
        print(f"{name:<14}{r['alone']['tokens_per_s']:>13.1f}{r['batched']['tokens_per_s']:>15.1f}"
              f"{r['throughput_ratio']:>7.2f}x{r['alone']['tpot_s'] * 1e3:>10.1f}ms{r['batched']['tpot_s'] * 1e3:>12.1f}ms")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "concurrency": args.concurrency, "requests": args.requests, "rounds": args.rounds,
        "threads": args.threads, "max_batch": args.max_batch, "host": platform.node(), "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "splits": results,
    }, indent=2))  # fmt: skip
    print(
        "batching: throughput "
        + ", ".join(f"{name} {r['throughput_ratio']:.2f}x" for name, r in results.items())
        + f" with --max-batch {args.max_batch} against 1 ({args.concurrency} requests at a time); {args.json}"
    )


if __name__ == "__main__":
    main()
