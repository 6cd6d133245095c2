"""Activation codecs on SmolLM2 over the `wan` lab (10 Mbit/s, 40 ms one way): what each one costs and
what it changes (plan -> serve -> metrics).

    python benchmarks/lab_codecs.py [--tokens 256] [--split edge:0:1,server-a:1:31,edge:31:32]
                                    [--codecs raw fp16 ...] [--json out/lab_codecs.json]

`lab up` the wan config and profile it, then one split (default: embed and head on the edge, the 30
blocks on server-a: two activation hops over the WAN) with every codec in turn on every activation hop.
From inside the edge (its CPU quota and links), per codec, one deployment:
- teacher-forced agreement: the prompt and the whole model's 256 greedy tokens in one step; position i's
  argmax must be the reference token i (the error a decode step sees, as tests/coordinator/
  test_split_generation.py checks);
- free-running: 256 greedy tokens generated through the split (after a discarded warm-up request):
  the first position where they leave the whole model's tokens, TPOT ((t_N - t_1) / (N - 1)), and per
  link the encoded bytes per token on the wire and the encode + decode seconds of each decode step.
The whole model's reference runs on the host, outside the lab. Predicted TPOT (the cost model with the
planner's codec table) is printed beside the measured one. Needs root; ends with one summary line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from labkit import LAB_CONFIGS, MODEL, in_edge, lab_up, load_average, profile, step

PROMPT = "Tell me a long story about a lighthouse keeper and the sea."
DEFAULT_SPLIT = "edge:0:1,server-a:1:31,edge:31:32"
WARMUP_TOKENS = 8
TOKEN_BYTES = 16  # a message of token ids carries at most this many bytes per token


def parse_split(text: str) -> list[tuple[str, int, int]]:
    stages = []
    for part in text.split(","):
        device, start, end = part.split(":")
        stages.append((device, int(start), int(end)))
    return stages


def prompt_ids() -> list[int]:
    from partition.model import resolve_model
    from partition.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(resolve_model(MODEL))
    return tokenizer.encode(tokenizer.render_chat([{"role": "user", "content": PROMPT}]), add_special=False)


def reference_tokens(prompt: list[int], n: int, threads: int) -> list[int]:
    """The whole model's greedy tokens, in this process."""
    import torch

    from partition.model import load_segment, resolve_model
    from partition.model.generation import GenerationRequest, generate, local_step
    from partition.types import Segment

    torch.set_num_threads(threads)
    source = resolve_model(MODEL)
    model = load_segment(source, Segment.whole(source.spec.n_blocks))
    cache = model.new_cache(1, len(prompt) + n)
    request = GenerationRequest(prompt, max_new_tokens=n, context=len(prompt) + n)
    return generate(local_step(model, cache), request, eos_ids=(), decode=lambda ids: "").token_ids


def codec_plans(cluster_path: Path, split, codecs: list[str], prompt_tokens: int, new_tokens: int, out: Path):
    """One plan file per codec: the split with that codec on every activation hop, predicted by the cost model."""
    from partition.artifacts import save_plan
    from partition.plan import DEFAULT_CODECS, evaluate, load_cluster
    from partition.plan.planner import plan_id
    from partition.types import Plan, Segment, Stage, Workload

    cluster = load_cluster(cluster_path)
    workload = Workload(prompt_tokens, new_tokens)
    n = cluster.model.n_units
    files, predicted = {}, {}
    for codec in codecs:
        stages = tuple(
            Stage(device, Segment(start, end), "raw" if end == n else codec) for device, start, end in split
        )
        prediction = evaluate(cluster, stages, workload, DEFAULT_CODECS)
        plan = Plan(
            plan_id=plan_id(cluster, stages, workload),
            epoch=1,
            model=cluster.model,
            edge=cluster.edge.name,
            stages=stages,
            workload=workload,
            predicted=prediction,
            baselines=(),
        )
        files[codec] = out / f"plan-{codec}.json"
        save_plan(plan, files[codec])
        predicted[codec] = {"tpot_s": prediction.tpot_s, "ttft_s": prediction.ttft_s}
    return files, predicted


# -- inside the edge --------------------------------------------------------------------------------------


def edge_run(spec_path: Path) -> None:
    """Every codec's deployment in turn, from inside the edge; writes the raw results to spec["out"]."""
    import torch

    from partition.artifacts import load_plan
    from partition.coordinator.bench import run_requests
    from partition.coordinator.deploy import deploy
    from partition.coordinator.session import PipelineSession
    from partition.coordinator.workers import cluster_addresses

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    prompt, reference = spec["prompt"], spec["reference"]
    context = len(prompt) + len(reference) + 1
    addresses = cluster_addresses(Path(spec["cluster"]))
    results = {}
    for codec, plan_file in spec["plans"].items():
        deployment = deploy(load_plan(Path(plan_file)), addresses, max_context=context, max_sessions=1)
        try:
            session = PipelineSession(deployment, f"teacher-{codec}", context=context)
            try:
                logits = session.logits(prompt + reference[:-1], 0)  # [S, V]
            finally:
                session.close()
            forced = torch.argmax(logits[len(prompt) - 1 :], dim=-1).tolist()
            run_requests(deployment, prompt, WARMUP_TOKENS, 1)  # warm-up, discarded
            run = run_requests(deployment, prompt, len(reference), 1)
        finally:
            deployment.close()
        timing = run.timings[0]
        links = {}
        for span in run.spans:
            if span.src and span.token > 0:  # decode steps only
                links.setdefault(f"{span.src} -> {span.dst}", []).append(span)
        results[codec] = {
            "teacher_forced": forced,
            "free_running": list(run.token_ids[0]),
            "ttft_s": timing.token_times_s[0] - timing.arrival_s - run.open_s[0],  # from the open session
            "tpot_s": (timing.token_times_s[-1] - timing.token_times_s[0]) / (len(timing.token_times_s) - 1),
            "links": {
                name: {
                    "codec": spans[0].codec,
                    "bytes_per_token": statistics.median(s.payload_bytes / s.n_tokens for s in spans),
                    "encode_s": statistics.median(s.encode_s for s in spans),
                    "decode_s": statistics.median(s.decode_s for s in spans),
                    "wire_s": statistics.median(s.wire_s for s in spans),
                }
                for name, spans in links.items()
            },
        }
        print(f"{codec}: TPOT {results[codec]['tpot_s'] * 1e3:.1f} ms", flush=True)
    Path(spec["out"]).write_text(json.dumps(results))


# -- on the host ------------------------------------------------------------------------------------------


def first_divergence(tokens: list[int], reference: list[int]) -> int | None:
    """Index of the first token that differs from the reference; None when all agree."""
    return next((i for i, (a, b) in enumerate(zip(tokens, reference, strict=True)) if a != b), None)


def summarize(raw: dict, reference: list[int], predicted: dict) -> list[dict]:
    rows = []
    for codec, r in raw.items():
        # token ids travel raw whatever the codec: count only the links that carry activations
        activation = {n: link for n, link in r["links"].items() if link["bytes_per_token"] > TOKEN_BYTES}
        rows.append(
            {
                "codec": codec,
                "bytes_per_token": sum(link["bytes_per_token"] for link in activation.values()),
                "codec_s_per_token": sum(link["encode_s"] + link["decode_s"] for link in activation.values()),
                "tpot_s": r["tpot_s"],
                "predicted_tpot_s": predicted[codec]["tpot_s"],
                "ttft_s": r["ttft_s"],
                "teacher_forced_agreement": sum(
                    a == b for a, b in zip(r["teacher_forced"], reference, strict=True)
                )
                / len(reference),
                "free_running_first_divergence": first_divergence(r["free_running"], reference),
                "free_running_agreement": sum(
                    a == b for a, b in zip(r["free_running"], reference, strict=True)
                )
                / len(reference),
                "links": r["links"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=256, help="greedy tokens compared and generated")
    parser.add_argument("--split", default=DEFAULT_SPLIT, help="device:start:end,... in chain order")
    parser.add_argument("--codecs", nargs="+", help="codecs to run (default: every registered codec)")
    parser.add_argument("--workdir", type=Path, default=Path("out/lab_codecs"))
    parser.add_argument("--json", type=Path, default=Path("out/lab_codecs.json"))
    parser.add_argument("--edge-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.edge_run:
        edge_run(args.edge_run)
        return 0
    from partition.codec.registry import CODECS

    codecs = args.codecs or list(CODECS)
    split = parse_split(args.split)
    load = load_average()
    workdir = args.workdir.resolve()
    prompt = prompt_ids()
    started = time.perf_counter()
    reference = reference_tokens(prompt, args.tokens, threads=1)
    print(
        f"reference: the whole model's {args.tokens} greedy tokens in {time.perf_counter() - started:.1f} s"
    )
    with lab_up(LAB_CONFIGS["wan"], workdir) as lab:
        cluster = profile(lab, MODEL, workdir)
        plans, predicted = codec_plans(cluster, split, codecs, len(prompt), args.tokens, workdir)
        spec = {
            "threads": lab.edge_threads,
            "cluster": str(cluster),
            "prompt": prompt,
            "reference": reference,
            "plans": {codec: str(path) for codec, path in plans.items()},
            "out": str(workdir / "edge-results.json"),
        }
        (workdir / "edge-spec.json").write_text(json.dumps(spec))
        script = Path(__file__).resolve()
        step(
            in_edge(lab, [sys.executable, str(script), "--edge-run", str(workdir / "edge-spec.json")]),
            workdir / "edge-run.log",
        )
        raw = json.loads((workdir / "edge-results.json").read_text())
    rows = summarize(raw, reference, predicted)

    print(
        f"\n{MODEL} over the wan lab (10 Mbit/s, 40 ms one way), split {args.split}, prompt {len(prompt)} tokens, "
        f"{args.tokens} tokens; bytes and codec time summed over the activation hops of one decode step"
    )
    print(
        f"{'codec':<13} {'B/token':>8} {'x raw':>6} {'enc+dec':>9} {'TPOT':>9} {'pred.':>9} {'x raw':>6} "
        f"{'teacher-forced':>15} {'free-running first divergence':>30}"
    )
    raw_row = next((r for r in rows if r["codec"] == "raw"), rows[0])
    for r in rows:
        divergence = r["free_running_first_divergence"]
        print(
            f"{r['codec']:<13} {r['bytes_per_token']:8.0f} {r['bytes_per_token'] / raw_row['bytes_per_token']:6.2f} "
            f"{r['codec_s_per_token'] * 1e3:7.3f}ms {r['tpot_s'] * 1e3:7.1f}ms {r['predicted_tpot_s'] * 1e3:7.1f}ms "
            f"{r['tpot_s'] / raw_row['tpot_s']:6.2f} {r['teacher_forced_agreement']:14.1%} "
            f"{'none (all ' + str(args.tokens) + ' agree)' if divergence is None else f'token {divergence}':>30}"
        )
    report = {
        "model": MODEL,
        "lab": "wan",
        "split": args.split,
        "prompt_tokens": len(prompt),
        "tokens": args.tokens,
        "machine": platform.processor() or platform.machine(),
        "load_average_before": load,
        "codecs": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    lossless = [r["codec"] for r in rows if r["free_running_first_divergence"] is None]
    smallest = min(rows, key=lambda r: r["bytes_per_token"])
    fastest = min(rows, key=lambda r: r["tpot_s"])
    lowest = min(rows, key=lambda r: r["teacher_forced_agreement"])
    print(
        f"lab_codecs: wan, {len(rows)} codecs; fewest bytes {smallest['codec']} "
        f"({smallest['bytes_per_token']:.0f} B/token, {raw_row['bytes_per_token'] / smallest['bytes_per_token']:.1f}x "
        f"below raw); fastest TPOT {fastest['codec']} {fastest['tpot_s'] * 1e3:.1f} ms (raw "
        f"{raw_row['tpot_s'] * 1e3:.1f} ms); teacher-forced agreement >= {lowest['teacher_forced_agreement']:.1%} "
        f"({lowest['codec']}); all {args.tokens} free-running tokens equal for: {', '.join(lossless) or 'none'}; "
        f"JSON in {args.json}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
