"""Single-process decode speed and TTFT: our engine against transformers' `generate`, same weights, same threads.

    python benchmarks/engine.py [--model smollm2-135m] [--threads 2] [--new-tokens 64] [--repeats 5]
                                [--json out/engine.json]

Runs are interleaved (ours, theirs, ours, ...) after one discarded warm-up each, so both see the same
machine state. Both generate exactly --new-tokens greedy tokens (EOS ignored). TTFT is prompt arrival to
the first token; TPOT is (t_N - t_1) / (N - 1). Medians are reported, with the ratio ours / theirs for
decode tokens/s and theirs / ours for TTFT (above 1 means we are faster). Ends with one summary line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from partition.model import load_segment, resolve_model
from partition.model.generation import GenerationRequest, generate, local_step
from partition.model.tokenizer import load_tokenizer
from partition.types import Segment

PROMPTS = {
    "chat": None,  # the chat question through the chat template
    "long": "Write a detailed history of the city of Paris, from its founding to the present day. " * 8,
}


def run_ours(model, prompt_ids: list[int], new_tokens: int) -> tuple[float, float]:
    cache = model.new_cache(1, len(prompt_ids) + new_tokens)
    request = GenerationRequest(prompt_ids, max_new_tokens=new_tokens, context=len(prompt_ids) + new_tokens)
    result = generate(local_step(model, cache), request, eos_ids=(), decode=lambda ids: "")
    assert len(result.token_ids) == new_tokens
    return result.ttft_s, result.tpot_s


class _Clock:
    """A transformers streamer that timestamps each generated token as it is produced."""

    def __init__(self):
        self.times: list[float] = []
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first put is the prompt itself
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def run_transformers(model, prompt_ids: list[int], new_tokens: int) -> tuple[float, float]:
    clock = _Clock()
    start = time.perf_counter()
    model.generate(
        torch.tensor([prompt_ids]),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        streamer=clock,
    )
    t = clock.times
    assert len(t) == new_tokens
    return t[0] - start, (t[-1] - t[0]) / (len(t) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="out/engine.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    source = resolve_model(args.model)
    tokenizer = load_tokenizer(source)
    ours = load_segment(source, Segment.whole(source.spec.n_blocks))
    if source.format == "gguf":
        theirs = transformers.AutoModelForCausalLM.from_pretrained(
            str(source.path.parent), gguf_file=source.path.name, dtype=torch.float32
        )
    else:
        theirs = transformers.AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32)
    theirs.eval()

    prompts = {}
    for name, text in PROMPTS.items():
        if text is None:
            chat = [{"role": "user", "content": "What is the capital of France?"}]
            prompts[name] = tokenizer.encode(tokenizer.render_chat(chat), add_special=False)
        else:
            prompts[name] = tokenizer.encode(text)

    report = {
        "model": source.name,
        "threads": args.threads,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompts": {},
    }
    print(f"{args.model}: {args.new_tokens} greedy tokens, {args.threads} threads, median of {args.repeats}")
    header = f"{'prompt':<7}{'tokens':>7}{'':>3}{'TTFT ms':>9}{'TPOT ms':>9}{'decode tok/s':>14}"
    print(header + "\n" + "-" * len(header))
    for name, ids in prompts.items():
        run_ours(ours, ids, 4), run_transformers(theirs, ids, 4)  # warm-up, discarded
        samples = {"partition": [], "transformers": []}
        for _ in range(args.repeats):
            samples["partition"].append(run_ours(ours, ids, args.new_tokens))
            samples["transformers"].append(run_transformers(theirs, ids, args.new_tokens))
        row = {}
        for who, runs in samples.items():
            ttft = statistics.median(r[0] for r in runs)
            tpot = statistics.median(r[1] for r in runs)
            row[who] = {"ttft_s": ttft, "tpot_s": tpot, "decode_tokens_per_s": 1 / tpot, "runs": runs}
            print(f"{name:<7}{len(ids):>7}  {who[:1]}{ttft * 1e3:>9.1f}{tpot * 1e3:>9.2f}{1 / tpot:>14.1f}")
        row["decode_speedup"] = (
            row["partition"]["decode_tokens_per_s"] / row["transformers"]["decode_tokens_per_s"]
        )
        row["ttft_speedup"] = row["transformers"]["ttft_s"] / row["partition"]["ttft_s"]
        row["prompt_tokens"] = len(ids)
        report["prompts"][name] = row
        print(f"{'':<7}{'':>7}  ratio: decode {row['decode_speedup']:.2f}x, TTFT {row['ttft_speedup']:.2f}x")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    speedups = [r["decode_speedup"] for r in report["prompts"].values()]
    ttfts = [r["ttft_speedup"] for r in report["prompts"].values()]
    print(
        f"engine: decode {min(speedups):.2f}-{max(speedups):.2f}x transformers, "
        f"TTFT {min(ttfts):.2f}-{max(ttfts):.2f}x (p = partition, t = transformers; {out})"
    )


if __name__ == "__main__":
    main()
