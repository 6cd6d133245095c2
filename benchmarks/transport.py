"""What the transport costs (serve): our stage chain against bare gRPC echoes of the same payloads.

    python benchmarks/transport.py [--model smollm2-135m] [--stages 3] [--tokens 64] [--codec raw]
                                   [--threads 1] [--json out/transport.json]

Run from the repository root; real worker processes on 127.0.0.1, and the bare gRPC references of
benchmarks/grpc_reference.py (an echo server, a relay chain) in processes of their own.
1. Hop overhead. A chain of K stages holding one block each (the first also the embedding, none the
   head, so every link carries one hidden state) decodes greedily. Per step, (latency - the stages'
   compute) is what the transport costs over the K + 1 hops. It is set against the sum, over the same
   K + 1 message sizes, of the bare echo's one-way time (RTT / 2 over one open stream), measured with
   one round trip before each of the chain's steps: at the pipeline's message rate, in the same
   moments. Both ends of the echo then sit idle between messages as a stage does between tokens
   (waking an idle process costs: a 2.3 KB echo's RTT doubles with pauses of 20 ms). The hot,
   back-to-back echo is reported too. Target: at most 1.5x. For scale, a relay chain of K processes
   that forward the bytes and do nothing else, measured the same way: what the chain's shape costs;
   and the same relays each streaming one block's weights through the CPU per message (its compute
   time taken off): what forwarding costs on the caches a stage's compute leaves behind.
2. TPOT. The whole model split evenly over K stages (head on the last; it returns the top logits of
   the last position, as serve asks for greedy sampling) against single-process TPOT plus the hop costs of 1 (links carrying more than a hidden
   state add the hot echo's extra time for their size). Single-process and split runs alternate in
   rounds, so load from neighbours on a shared host hits both. Target: within 15 %. The split tokens
   must equal the single-process greedy tokens (raw codec).
Warm-up steps are discarded; medians are quoted. Ends with one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from grpc_reference import Echo, hot_echo, relay_chain, start_echo, start_relays

from partition.model import load_segment, resolve_model
from partition.transport.channels import TransportConfig
from partition.transport.client import Chain
from partition.transport.local import spawn_workers, stop_workers
from partition.types import RETURN_TOP_K, Segment

PROMPT = [1, 504, 3458, 282, 4649, 314, 5175, 47, 2]  # any ids; the same for every run
WARMUP = 8  # decode steps (and echo rounds) discarded from every run
ROUNDS = 3  # alternating single-process and split runs for the TPOT comparison
HEADER_BYTES = 160  # a Step's fields besides the tensor (ids, positions, hop records), roughly


# -- the chain ----------------------------------------------------------------------------------------------


def link_sizes(result) -> list[int]:
    """Bytes of the message on each of the K + 1 links of one step (tensor plus header)."""
    sizes = [result.bytes_sent] + [hop.bytes_out for hop in result.hops]
    return [size + HEADER_BYTES for size in sizes]


async def decode_through_chain(addresses, model: str, segments, codec: str, tokens: int, echo_address=None):
    """Greedy-decode through the chain: its tokens, (step latency, StepResult) per decode step, and the
    echo's one-way time per size when `echo_address` is given.

    Before each step, one echo round trip (sizes in turn) of the sizes the step's links carry: the
    echo is measured in the same moments as the chain and, like each stage, after sitting idle.
    Without a head on the last stage the result is a hidden state: its first value picks the next
    token (any deterministic choice does; that run only times the chain).
    """
    chain = Chain(addresses, TransportConfig())
    echo = Echo(echo_address) if echo_address else None
    steps, out = [], []
    try:
        context = len(PROMPT) + tokens + 1
        replies = await chain.load(
            "bench", 1, model, segments, [codec] * len(segments), max_context=context, max_sessions=1
        )
        vocab = replies[0].vocab_size
        session = await chain.open_session(
            f"bench-{time.monotonic_ns()}", "bench", 1, replies[0].model_digest
        )
        try:
            result = await session.step(torch.tensor([PROMPT]), 0, logits_top_k=RETURN_TOP_K)
            for position in range(len(PROMPT), len(PROMPT) + tokens):
                if echo is not None and steps:
                    sizes = sorted(set(link_sizes(steps[-1][1])))
                    await echo.round_trip(sizes[position % len(sizes)])
                if result.output.shape[-1] == vocab:
                    token = int(result.output[0, -1].argmax())
                else:
                    token = int(result.output[0, -1, 0].abs() * 1000) % vocab
                out.append(token)
                started = time.perf_counter()
                result = await session.step(torch.tensor([[token]]), position, logits_top_k=RETURN_TOP_K)
                steps.append((time.perf_counter() - started, result))
        finally:
            await session.close()
    finally:
        if echo is not None:
            await echo.close()
        await chain.close()
    return out, steps[WARMUP:], echo.one_way_s() if echo is not None else {}


def single_process(model, tokens: int) -> tuple[list[int], list[float]]:
    """Greedy tokens and seconds per decode step (warm-up dropped), whole model in this process."""
    cache = model.new_cache(slots=1, max_len=len(PROMPT) + tokens + 1)
    logits = model(torch.tensor([PROMPT]), cache, [0], [0], last_token_only=True)
    out, times = [], []
    for position in range(len(PROMPT), len(PROMPT) + tokens):
        out.append(int(logits[0, -1].argmax()))
        started = time.perf_counter()
        logits = model(torch.tensor([[out[-1]]]), cache, [0], [position])
        times.append(time.perf_counter() - started)
    return out, times[WARMUP:]


def even_split(n_units: int, stages: int) -> list[Segment]:
    bounds = [round(i * n_units / stages) for i in range(stages + 1)]
    return [Segment(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def links_table(steps, workers, echo, hot) -> list[dict]:
    """Per link: bytes, the echo's one-way times, and our wire time (one host, one clock)."""
    results = [r for _, r in steps]
    names = ["coordinator"] + [w.name for w in workers] + ["coordinator"]
    links = []
    for i, size in enumerate(link_sizes(results[-1])):
        if i < len(workers):
            sent = [r.sent_unix_ns if i == 0 else r.hops[i - 1].sent_unix_ns for r in results]
            wires = [(r.hops[i].recv_unix_ns - t) / 1e9 for r, t in zip(results, sent, strict=True)]
        else:
            wires = [(r.received_unix_ns - r.hops[-1].sent_unix_ns) / 1e9 for r in results]
        links.append(
            {
                "from": names[i],
                "to": names[i + 1],
                "bytes": size,
                "echo_one_way_s": echo[size],
                "hot_echo_one_way_s": hot[size],
                "wire_p50_s": statistics.median(wires),
            }
        )
    print(f"  {'link':<30}{'bytes':>9}{'echo ms':>10}{'hot echo ms':>13}{'our wire ms':>13}")
    for link in links:
        print(
            f"  {link['from'] + ' -> ' + link['to']:<30}{link['bytes']:>9}{link['echo_one_way_s'] * 1e3:>10.3f}"
            f"{link['hot_echo_one_way_s'] * 1e3:>13.3f}{link['wire_p50_s'] * 1e3:>13.3f}"
        )
    for i, worker in enumerate(workers):
        keys = ("queue_s", "decode_s", "compute_s", "encode_s")
        parts = {k: statistics.median(getattr(r.hops[i], k) for r in results) for k in keys}
        inside = statistics.median((r.hops[i].sent_unix_ns - r.hops[i].recv_unix_ns) / 1e9 for r in results)
        print(
            f"  {worker.name}: in stage {inside * 1e3:.3f} ms = "
            + ", ".join(f"{k[:-2]} {v * 1e3:.3f}" for k, v in parts.items())
            + f", other {(inside - sum(parts.values())) * 1e3:.3f}"
        )
    return links


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m", help="built-in name (workers read no other files)")
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64, help="decode steps per run")
    parser.add_argument("--codec", default="raw")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, per worker and single process")
    parser.add_argument("--json", type=Path, default=Path("out/transport.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = resolve_model(args.model)
    k = args.stages
    thin = [Segment(0, 2)] + [Segment(u, u + 1) for u in range(2, k + 1)]  # embed + block, then a block each
    whole = even_split(source.spec.n_units, k)
    n_steps = args.tokens + WARMUP

    model = load_segment(source, Segment.whole(source.spec.n_blocks))
    workers = spawn_workers([f"stage-{i}" for i in range(k)], extra_args=("--threads", str(args.threads)))
    echo_process, echo_address = start_echo()
    relays, first_relay, last_relay = start_relays(k)
    block_weights = sum(p.numel() for p in load_segment(source, Segment(2, 3)).parameters())
    computing, first_computing, last_computing = start_relays(k, block_weights)
    try:
        addresses = [w.address for w in workers]
        _, thin_steps, echo = asyncio.run(
            decode_through_chain(addresses, args.model, thin, args.codec, n_steps, echo_address)
        )
        # The relay chain at the same message rate: idle between passes as long as the stages computed.
        thin_compute_s = statistics.median(sum(h.compute_s for h in r.hops) for _, r in thin_steps)
        hidden_size = link_sizes(thin_steps[-1][1])[1]
        relay_pass_s, relay_echo_s = asyncio.run(
            relay_chain(first_relay, last_relay, echo_address, hidden_size, n_steps, thin_compute_s)
        )
        computing_pass_s, computing_echo_s = asyncio.run(
            relay_chain(first_computing, last_computing, echo_address, hidden_size, n_steps, 0.0)
        )
        # Single process and split alternate in rounds: load from neighbours on a shared host hits both.
        single_s, split_steps = [], []
        for _ in range(ROUNDS):
            single_tokens, times = single_process(model, n_steps)
            tokens, steps, _ = asyncio.run(
                decode_through_chain(addresses, args.model, whole, args.codec, n_steps)
            )
            single_s, split_steps = single_s + times, split_steps + steps
        sizes = sorted(set(echo) | set(link_sizes(split_steps[-1][1])))
        hot = asyncio.run(hot_echo(echo_address, sizes))
    finally:
        stop_workers(workers)
        for process in [echo_process, *relays, *computing]:
            process.terminate()
            process.wait()

    # 1. hop overhead on the thin chain
    thin_sizes = link_sizes(thin_steps[-1][1])
    overhead_s = statistics.median(latency - sum(h.compute_s for h in r.hops) for latency, r in thin_steps)
    bare_s = sum(echo[size] for size in thin_sizes)
    hot_s = sum(hot[size] for size in thin_sizes)
    ratio = overhead_s / bare_s
    hop_s = overhead_s / len(thin_sizes)  # our cost of one hop of a hidden state
    relay_hop_s = relay_pass_s / len(thin_sizes)
    relay_ratio = relay_hop_s / relay_echo_s
    computing_hop_s = computing_pass_s / len(thin_sizes)
    computing_ratio = computing_hop_s / computing_echo_s
    # 2. TPOT of the whole model split, against single process + hop costs
    split_sizes = link_sizes(split_steps[-1][1])
    hidden = thin_sizes[1]  # a hidden state's message: the size hop_s was measured with
    hop_costs = [hop_s + hot[size] - hot[hidden] for size in split_sizes]  # + the bigger messages' extra
    single_tpot = statistics.median(single_s)
    predicted = single_tpot + sum(hop_costs)
    split_tpot = statistics.median(latency for latency, _ in split_steps)
    tpot_error = split_tpot / predicted - 1
    # Where a miss lies: the stages' compute against the single process, and the transport measured in
    # the split itself (a hop after 10 blocks' weights have gone through the caches) against the thin chain's.
    split_compute = statistics.median(sum(h.compute_s for h in r.hops) for _, r in split_steps)
    split_transport = statistics.median(
        latency - sum(h.compute_s for h in r.hops) for latency, r in split_steps
    )
    match = tokens == single_tokens

    print(
        f"{args.model}, {k} worker processes, codec {args.codec}, {args.tokens} decode steps, {args.threads} thread(s) each"
    )
    print(f"1. hop overhead: stages {[str(s) for s in thin]}")
    thin_links = links_table(thin_steps, workers, echo, hot)
    print(
        f"  transport {overhead_s * 1e3:.3f} ms/step over {len(thin_sizes)} hops ({hop_s * 1e3:.3f} ms/hop); "
        f"bare echo {bare_s * 1e3:.3f} ms ({ratio:.2f}x), hot {hot_s * 1e3:.3f} ms ({overhead_s / hot_s:.2f}x)"
    )
    print(
        f"  relay chain ({k} processes forwarding {hidden_size} B, nothing parsed): {relay_hop_s * 1e3:.3f} ms/hop, "
        f"{relay_ratio:.2f}x its echo ({relay_echo_s * 1e3:.3f} ms one way); our hop = {hop_s / relay_hop_s:.2f}x a relay hop"
    )
    print(
        f"  computing relay chain (each streams a block's {block_weights * 4 / 1e6:.1f} MB of weights per message, "
        f"compute taken off): {computing_hop_s * 1e3:.3f} ms/hop, {computing_ratio:.2f}x its echo "
        f"({computing_echo_s * 1e3:.3f} ms one way); our hop = {hop_s / computing_hop_s:.2f}x a computing relay hop"
    )
    print(f"2. TPOT: stages {[str(s) for s in whole]}")
    split_links = links_table(split_steps, workers, hot, hot)
    print(
        f"  predicted {single_tpot * 1e3:.2f} + {' + '.join(f'{c * 1e3:.3f}' for c in hop_costs)} = "
        f"{predicted * 1e3:.2f} ms; measured {split_tpot * 1e3:.2f} ms ({tpot_error:+.1%}); tokens match: {match}"
    )
    print(
        f"  in the split: the stages computed {split_compute * 1e3:.2f} ms ({split_compute / single_tpot - 1:+.1%} on "
        f"the single process); the transport took {split_transport * 1e3:.2f} ms, "
        f"{split_transport / len(split_sizes) * 1e3:.3f} ms/hop against {hop_s * 1e3:.3f} on the thin chain"
    )
    report = {
        "model": args.model,
        "codec": args.codec,
        "threads": args.threads,
        "decode_steps": args.tokens,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "hop_overhead": {
            "stages": [str(s) for s in thin],
            "links": thin_links,
            "transport_per_step_p50_s": overhead_s,
            "per_hop_s": hop_s,
            "bare_echo_sum_s": bare_s,
            "hot_echo_sum_s": hot_s,
            "ratio_vs_bare_echo": ratio,
            "ratio_vs_hot_echo": overhead_s / hot_s,
            "relay_chain": {
                "message_bytes": hidden_size,
                "per_hop_s": relay_hop_s,
                "echo_one_way_s": relay_echo_s,
                "ratio_vs_bare_echo": relay_ratio,
            },
            "computing_relay_chain": {
                "weights_per_message": block_weights,
                "per_hop_s": computing_hop_s,
                "echo_one_way_s": computing_echo_s,
                "ratio_vs_bare_echo": computing_ratio,
                "our_hop_ratio": hop_s / computing_hop_s,
            },
        },
        "tpot": {
            "stages": [str(s) for s in whole],
            "links": split_links,
            "single_process_tpot_s": single_tpot,
            "hop_costs_s": hop_costs,
            "predicted_tpot_s": predicted,
            "split_tpot_s": split_tpot,
            "error": tpot_error,
            "split_compute_p50_s": split_compute,
            "split_transport_p50_s": split_transport,
            "tokens_match_single_process": match,
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(
        f"transport: hop overhead {ratio:.2f}x a bare gRPC echo at the same message rate ({hop_s * 1e3:.3f} ms/hop; "
        f"{overhead_s / hot_s:.2f}x a hot echo; a relay chain doing nothing {relay_ratio:.2f}x, one computing as the stages do {computing_ratio:.2f}x; target <= 1.5x); split TPOT {split_tpot * 1e3:.1f} ms vs single + "
        f"hops {predicted * 1e3:.1f} ms ({tpot_error:+.1%}, target within 15%); tokens match: {match}; JSON in {args.json}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
