"""Our gRPC chain against what users would otherwise pick: the same segments as Ray actors (serve).

    python benchmarks/ray_vs_grpc.py [--stages 3] [--tokens 64] [--rounds 2] [--threads 1]
                                     [--json out/ray_vs_grpc.json]

One run, one machine. The whole model is split evenly into --stages segments (the first holds the
embedding, the last the head and returns the last position's logits); the driver feeds token ids and
picks the greedy token. The same segments (partition.model.load_segment) run two ways:
- gRPC: one `partition worker` process per stage on 127.0.0.1, our chain: the hidden state goes stage
  to stage over open streams and the last stage answers the driver (raw codec);
- Ray: one actor per stage in a local `ray.init` cluster, each holding its segment and KV cache; a step
  is a chain of actor calls, each taking the previous call's ObjectRef, so Ray carries the hidden state
  from actor to actor and the driver only `ray.get`s the last one (the logits).
Every process gets --threads torch threads. Rounds alternate gRPC and Ray so neighbours' load on a
shared host hits both. Warm-up steps are discarded; TPOT is the median step latency. Both must give the
single-process greedy tokens. Ends with one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transport import PROMPT, WARMUP, decode_through_chain, even_split, single_process

from partition.model import load_segment, resolve_model
from partition.transport.local import spawn_workers, stop_workers
from partition.types import Segment

REPO = Path(__file__).resolve().parents[1]


class RaySegment:
    """One stage as a Ray actor: its segment of the model, its KV cache, the compute time of each call."""

    def __init__(self, model: str, start: int, end: int, context: int, threads: int) -> None:
        torch.set_num_threads(threads)
        self.model = load_segment(resolve_model(model), Segment(start, end))
        self.context = context
        self.cache = self.model.new_cache(1, context)
        self.compute_s: list[float] = []

    def reset(self) -> None:
        """A fresh session: an empty cache and no timings."""
        self.cache = self.model.new_cache(1, self.context)
        self.compute_s = []

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, position: int, last_only: bool) -> torch.Tensor:
        """x: token ids [1, S] or hidden states [1, S, D]; hidden states, or logits [1, 1, V] with the head."""
        started = time.perf_counter()
        out = self.model(x, self.cache, [0], [position], last_token_only=last_only)
        self.compute_s.append(time.perf_counter() - started)
        return out

    def timings(self) -> list[float]:
        return self.compute_s


def ray_decode(actors, tokens: int) -> tuple[list[int], list[tuple[float, float]]]:
    """Greedy-decode through the actors: tokens, and (step latency, sum of the stages' compute) per step."""
    import ray

    ray.get([actor.reset.remote() for actor in actors])

    def step(x: torch.Tensor, position: int) -> torch.Tensor:
        ref = x
        for i, actor in enumerate(actors):
            ref = actor.forward.remote(ref, position, i == len(actors) - 1)  # ObjectRef in, ObjectRef out
        return ray.get(ref)

    logits = step(torch.tensor([PROMPT]), 0)
    out, latencies = [], []
    for position in range(len(PROMPT), len(PROMPT) + tokens):
        out.append(int(logits[0, -1].argmax()))
        started = time.perf_counter()
        logits = step(torch.tensor([[out[-1]]]), position)
        latencies.append(time.perf_counter() - started)
    computes = [ray.get(actor.timings.remote())[1:] for actor in actors]  # [0] is the prefill
    steps = [(lat, sum(c[i] for c in computes)) for i, lat in enumerate(latencies)]
    return out, steps[WARMUP:]


def start_ray(segments: list[Segment], model: str, context: int, threads: int):
    import ray

    # Actors import this checkout's `partition`; Ray's files go to a private temp dir (short: socket paths).
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp = tempfile.mkdtemp(prefix="rvg-", dir="/tmp")
    ray.init(
        num_cpus=len(segments),
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp,
        configure_logging=False,
    )
    actor_class = ray.remote(num_cpus=1)(RaySegment)
    actors = [actor_class.remote(model, s.start, s.end, context, threads) for s in segments]
    ray.get([actor.timings.remote() for actor in actors])  # every actor loaded its segment
    return actors


def summarize(steps) -> dict:
    latencies = [lat for lat, _ in steps]
    overheads = [lat - compute for lat, compute in steps]
    return {
        "tpot_p50_s": statistics.median(latencies),
        "tpot_p90_s": statistics.quantiles(latencies, n=10)[-1],
        "compute_p50_s": statistics.median(compute for _, compute in steps),
        "overhead_p50_s": statistics.median(overheads),  # step latency - the stages' compute
        "steps": len(steps),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m", help="built-in name (workers read no other files)")
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64, help="decode steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="gRPC and Ray runs, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per stage and single process")
    parser.add_argument("--json", type=Path, default=Path("out/ray_vs_grpc.json"))
    args = parser.parse_args(argv)
    import ray

    torch.set_num_threads(args.threads)
    source = resolve_model(args.model)
    segments = even_split(source.spec.n_units, args.stages)
    n_steps = args.tokens + WARMUP
    context = len(PROMPT) + n_steps + 1
    reference, _ = single_process(load_segment(source, Segment.whole(source.spec.n_blocks)), n_steps)

    workers = spawn_workers(
        [f"stage-{i}" for i in range(args.stages)], extra_args=("--threads", str(args.threads))
    )
    started = time.perf_counter()
    try:
        actors = start_ray(segments, args.model, context, args.threads)
        ray_start_s = time.perf_counter() - started
        grpc_steps, ray_steps, grpc_tokens, ray_tokens = [], [], [], []
        for _ in range(args.rounds):
            tokens, steps, _ = asyncio.run(
                decode_through_chain([w.address for w in workers], args.model, segments, "raw", n_steps)
            )
            grpc_tokens.append(tokens)
            grpc_steps += [(lat, sum(h.compute_s for h in r.hops)) for lat, r in steps]
            tokens, steps = ray_decode(actors, n_steps)
            ray_tokens.append(tokens)
            ray_steps += steps
    finally:
        stop_workers(workers)
        if ray.is_initialized():
            ray.shutdown()

    grpc, via_ray = summarize(grpc_steps), summarize(ray_steps)
    grpc["tokens_match_single_process"] = all(tokens == reference for tokens in grpc_tokens)
    via_ray["tokens_match_single_process"] = all(tokens == reference for tokens in ray_tokens)
    ratio = via_ray["tpot_p50_s"] / grpc["tpot_p50_s"]
    print(
        f"{args.model}, {args.stages} stages {[str(s) for s in segments]}, {args.tokens} decode steps x "
        f"{args.rounds} rounds, {args.threads} thread(s) per stage; Ray started in {ray_start_s:.1f} s"
    )
    print(
        f"  {'':<6} {'TPOT p50':>10} {'p90':>9} {'compute':>9} {'overhead':>9} {'x gRPC':>7}  tokens = single process"
    )
    for name, s in (("gRPC", grpc), ("Ray", via_ray)):
        print(
            f"  {name:<6} {s['tpot_p50_s'] * 1e3:8.2f}ms {s['tpot_p90_s'] * 1e3:7.2f}ms {s['compute_p50_s'] * 1e3:7.2f}ms "
            f"{s['overhead_p50_s'] * 1e3:7.2f}ms {s['tpot_p50_s'] / grpc['tpot_p50_s']:6.2f}x  "
            f"{s['tokens_match_single_process']}"
        )
    print(
        f"  overhead per hop ({args.stages + 1} hops): gRPC {grpc['overhead_p50_s'] / (args.stages + 1) * 1e3:.3f} ms, "
        f"Ray {via_ray['overhead_p50_s'] / (args.stages + 1) * 1e3:.3f} ms"
    )
    report = {
        "model": args.model,
        "stages": [str(s) for s in segments],
        "decode_steps": args.tokens,
        "rounds": args.rounds,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "ray_version": ray.__version__,
        "ray_start_s": ray_start_s,
        "grpc": grpc,
        "ray": via_ray,
        "tpot_ratio_ray_over_grpc": ratio,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(
        f"ray_vs_grpc: TPOT gRPC chain {grpc['tpot_p50_s'] * 1e3:.2f} ms, Ray actors {via_ray['tpot_p50_s'] * 1e3:.2f} ms "
        f"(Ray/gRPC {ratio:.2f}x; overhead {grpc['overhead_p50_s'] * 1e3:.2f} vs {via_ray['overhead_p50_s'] * 1e3:.2f} ms/step); "
        f"tokens match single process: gRPC {grpc['tokens_match_single_process']}, Ray "
        f"{via_ray['tokens_match_single_process']}; JSON in {args.json}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
