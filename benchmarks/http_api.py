"""What the OpenAI-compatible endpoint adds to an answer (serve --http): a streaming HTTP client against
the coordinator called directly, on the same deployment, in one run.

    python benchmarks/http_api.py [--tokens 64] [--requests 5] [--rounds 2] [--threads 1]
                                  [--json out/http_api.json]

Run from the repository root. The default model is split in two: the edge (this process) holds the
embedding and the first 15 blocks, one `partition worker` process on 127.0.0.1 the other 15 and the
head, raw codec. Each request continues the same prompt greedily for --tokens tokens (EOS ignored).
- direct: `Answerer.answer` in this process; token times are when the coordinator sampled each token.
- HTTP: `POST /v1/completions` with "stream": true from a client in its own process (as a user's
  client is); token times are when each server-sent event arrived at the client.
TTFT is from the request's start (the client's send, or the call, before the session opens) to the
first token; TPOT is
(last - first) / (tokens - 1). Direct and HTTP requests take turns, one each, so drifting load on a
shared host hits both alike. Both must give the same text. Medians over requests; one summary line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def client(url: str, tokens: int) -> None:
    """In its own process: one streamed completion; prints {"start", "times", "text"} (perf_counter)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    body = json.dumps({"prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True})
    start = time.perf_counter()
    connection.request(
        "POST", parts.path + "/completions", body=body, headers={"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 200, response.read()
    times, text = [], []
    while line := response.readline():
        if line.startswith(b"data: {"):
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["text"]:
                times.append(time.perf_counter())
                text.append(chunk["choices"][0]["text"])
    print(json.dumps({"start": start, "times": times, "text": "".join(text)}))


def ttft_tpot(start: float, times: list[float]) -> tuple[float, float]:
    return times[0] - start, (times[-1] - times[0]) / (len(times) - 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--requests", type=int, default=5, help="requests per way and round")
    parser.add_argument("--rounds", type=int, default=2, help="(requests x rounds) of each way, in turn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the edge and the worker")
    parser.add_argument("--json", type=Path, default=Path("out/http_api.json"))
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client(args.client, args.tokens)
        return 0

    import torch

    from partition.api.server import ApiServer
    from partition.coordinator.answer import Answerer
    from partition.coordinator.deploy import deploy
    from partition.model import resolve_model
    from partition.model.generation import GenerationRequest
    from partition.plan.synthetic import halves_plan
    from partition.transport.local import spawn_worker
    from partition.types import ModelRef

    torch.set_num_threads(args.threads)
    source = resolve_model("smollm2-135m")
    model = ModelRef(source.name, source.digest, source.spec.n_blocks)
    plan = halves_plan(model, source.spec.n_units, args.tokens)
    half = plan.stages[0].segment.end
    worker = spawn_worker("server", extra_args=("--threads", str(args.threads)))
    direct, over_http, texts = [], [], set()
    try:
        deployment = deploy(plan, {"server": worker.address}, max_context=256, max_sessions=1)
        try:
            answerer = Answerer(deployment)
            # EOS ignored: every request generates exactly --tokens tokens
            answerer.eos_ids = ()
            server = ApiServer("127.0.0.1", 0)
            server.attach(answerer)
            server.serve_in_thread()
            ids = answerer.tokenizer.encode(PROMPT)
            request = GenerationRequest(ids, args.tokens, context=len(ids) + args.tokens)
            answerer.answer(GenerationRequest(ids, 8, context=len(ids) + 8))  # warm-up, discarded
            for _ in range(args.rounds * args.requests):  # one of each, in turn
                start = time.perf_counter()  # before the session opens, as the client's send is
                result = answerer.answer(request).result
                direct.append(ttft_tpot(start, result.token_times_s))
                texts.add(result.text)
                out = subprocess.run(
                    [sys.executable, __file__, "--client", server.url, "--tokens", str(args.tokens)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                got = json.loads(out.stdout)
                over_http.append(ttft_tpot(got["start"], got["times"]))
                texts.add(got["text"])
            server.shutdown()
            server.server_close()
        finally:
            deployment.close()
    finally:
        worker.stop()

    summary = {}
    for name, runs in (("direct", direct), ("http", over_http)):
        summary[name] = {
            "ttft_p50_s": statistics.median(t for t, _ in runs),
            "tpot_p50_s": statistics.median(p for _, p in runs),
            "requests": len(runs),
        }
    d, h = summary["direct"], summary["http"]
    tpot_ratio, ttft_ratio = h["tpot_p50_s"] / d["tpot_p50_s"], h["ttft_p50_s"] / d["ttft_p50_s"]
    same_text = len(texts) == 1
    print(
        f"smollm2-135m, edge [0,{half}) + worker [{half},{source.spec.n_units}) on 127.0.0.1, raw; {args.tokens} "
        f"tokens x {args.requests} requests x {args.rounds} rounds per way, {args.threads} thread(s)"
    )
    print(f"  {'':<8} {'TTFT p50':>10} {'TPOT p50':>10}")
    for name, s in (("direct", d), ("HTTP", h)):
        print(f"  {name:<8} {s['ttft_p50_s'] * 1e3:8.2f}ms {s['tpot_p50_s'] * 1e3:8.2f}ms")
    print(
        f"  HTTP / direct: TTFT {ttft_ratio:.3f}x ({(h['ttft_p50_s'] - d['ttft_p50_s']) * 1e3:+.2f} ms), "
        f"TPOT {tpot_ratio:.3f}x ({(h['tpot_p50_s'] - d['tpot_p50_s']) * 1e3:+.2f} ms per token)"
    )
    report = {
        "model": "smollm2-135m",
        "stages": [[s.device, s.segment.start, s.segment.end, s.codec_out] for s in plan.stages],
        "tokens": args.tokens,
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "direct": d,
        "http": h,
        "tpot_ratio_http_over_direct": tpot_ratio,
        "ttft_ratio_http_over_direct": ttft_ratio,
        "same_text": same_text,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(
        f"http_api: streaming over HTTP costs {tpot_ratio:.3f}x the direct TPOT and {ttft_ratio:.3f}x its TTFT "
        f"({(h['tpot_p50_s'] - d['tpot_p50_s']) * 1e3:+.2f} ms per token); same text: {same_text}; JSON in {args.json}"
    )
    return 0 if same_text else 1


if __name__ == "__main__":
    raise SystemExit(main())
