"""What scoring a prompt costs (serve: a completion's `echo` with `logprobs`, what evaluation harnesses
send): the worker holding the head scoring it against the edge scoring it from every logit, in one run.

    python benchmarks/scoring.py [--prompt-tokens 512] [--top 1] [--rounds 3] [--threads 1]
                                 [--json out/scoring.json]

Run from the repository root. The default model is split in two: the edge (this process) holds the
embedding and the first 15 blocks, one `partition worker` process on 127.0.0.1 the other 15 and the
head, raw codec. Each way scores the same prompt of --prompt-tokens tokens, with --top alternatives
per token (lm-evaluation-harness asks 1), in a session of its own:
- every logit: the worker sends the logits of every position back (vocabulary x 4 bytes per token),
  a few hundred positions a step as scoring goes (SCORED_BYTES_PER_STEP), and the edge normalizes them
  and picks each token's entry (what a runtime that returns logits alone must do, and what this one
  did before `Step.score_next`);
- on the worker: the worker is sent each position's next token and sends back that token's
  log-probability and the alternatives (4 + 8 x top bytes per token); the prompt's last token then goes
  as a step of its own, as generation needs its row.
The two ways take turns, --rounds times. Reported: the time from the request to the entries (the
prefill included, medians), the bytes that came back, and whether both gave the same entries (to 1e-4).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs into the forest to hide. "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompt-tokens", type=int, default=512, help="tokens of the prompt scored")
    parser.add_argument("--top", type=int, default=1, help="alternatives per token (0-20)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way, in turn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the edge and the worker")
    parser.add_argument("--json", type=Path, default=Path("out/scoring.json"))
    args = parser.parse_args(argv)

    import torch

    from partition.coordinator.deploy import deploy
    from partition.coordinator.session import SCORED_BYTES_PER_STEP, PipelineSession
    from partition.model import resolve_model
    from partition.model.generation import as_log_probs
    from partition.model.scoring import prompt_scores
    from partition.model.tokenizer import load_tokenizer
    from partition.plan.synthetic import halves_plan
    from partition.transport.local import spawn_worker
    from partition.types import ModelRef

    torch.set_num_threads(args.threads)
    source = resolve_model("smollm2-135m")
    model = ModelRef(source.name, source.digest, source.spec.n_blocks)
    plan = halves_plan(model, source.spec.n_units, 1)
    half = plan.stages[0].segment.end
    ids = (load_tokenizer(source).encode(TEXT * (args.prompt_tokens // 10)) * 2)[: args.prompt_tokens]
    assert len(ids) == args.prompt_tokens, "the text is too short for --prompt-tokens"

    rows = max(1, SCORED_BYTES_PER_STEP // (4 * source.spec.vocab_size))

    def every_logit(session):  # the logits of every position back, normalized and picked here
        steps = [session.logits(ids[start : start + rows], start) for start in range(0, len(ids), rows)]
        return prompt_scores(as_log_probs(torch.cat(steps)), ids, args.top)

    def on_the_worker(session):
        return session.scores(ids, args.top)[0]

    ways = {"every logit": every_logit, "on the worker": on_the_worker}
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in ways}
    entries = {}
    worker = spawn_worker("server", extra_args=("--threads", str(args.threads)))
    try:
        deployment = deploy(
            plan, {"server": worker.address}, max_context=args.prompt_tokens + 8, max_sessions=1
        )
        try:
            for round_ in range(args.rounds + 1):  # the first round warms both up and is discarded
                for name, score in ways.items():
                    session = PipelineSession(deployment, context=args.prompt_tokens + 1, log_probs=True)
                    started = time.perf_counter()
                    entries[name] = score(session)
                    took = time.perf_counter() - started
                    back = sum(s.payload_bytes for s in session.spans if s.dst == plan.edge and s.src)
                    session.close()
                    if round_:
                        runs[name].append((took, back))
        finally:
            deployment.close()
    finally:
        worker.stop()

    before, after = entries["every logit"], entries["on the worker"]
    same = [e.token_id for e in before] == [e.token_id for e in after] and all(
        abs(a.logprob - b.logprob) <= 1e-4 and [i for i, _ in a.top] == [i for i, _ in b.top]
        for a, b in zip(before, after, strict=True)
    )
    summary = {
        name: {"time_p50_s": statistics.median(t for t, _ in r), "bytes_back": r[-1][1], "rounds": len(r)}
        for name, r in runs.items()
    }
    old, new = summary["every logit"], summary["on the worker"]
    time_ratio, bytes_ratio = old["time_p50_s"] / new["time_p50_s"], old["bytes_back"] / new["bytes_back"]
    print(
        f"smollm2-135m, edge [0,{half}) + worker [{half},{source.spec.n_units}) on 127.0.0.1, raw; a prompt of "
        f"{args.prompt_tokens} tokens scored with {args.top} alternative(s), {args.rounds} rounds per way, "
        f"{args.threads} thread(s)"
    )
    print(f"  {'':<14} {'time p50':>10} {'bytes back':>12}")
    for name, s in summary.items():
        print(f"  {name:<14} {s['time_p50_s'] * 1e3:8.1f}ms {s['bytes_back']:>12,}")
    report = {
        "model": "smollm2-135m",
        "stages": [[s.device, s.segment.start, s.segment.end, s.codec_out] for s in plan.stages],
        "prompt_tokens": args.prompt_tokens,
        "top": args.top,
        "rounds": args.rounds,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "ways": summary,
        "time_ratio_every_logit_over_worker": time_ratio,
        "bytes_ratio_every_logit_over_worker": bytes_ratio,
        "same_entries": same,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(
        f"scoring: every logit takes {time_ratio:.2f}x the time of scoring on the worker and brings back "
        f"{bytes_ratio:,.0f}x the bytes; same entries: {same}; JSON in {args.json}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
