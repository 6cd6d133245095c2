"""Generate text with the whole model in this process (no split): the reference the pipeline must match."""

from __future__ import annotations

import argparse
import sys

from partition.cli.arguments import whole_number
from partition.cli.prompting import (
    add_prompt_arguments,
    build_request,
    check_chat_flags,
    check_new_tokens_fit,
    logprobs_json,
    prompt_ids,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="built-in name, HF directory or .gguf file")
    add_prompt_arguments(parser)
    parser.add_argument(
        "--threads", type=whole_number(zero_means="all cores"), help="torch threads (default: all cores)"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from partition.metrics import json_out
    from partition.model import load_segment, resolve_model
    from partition.model.generation import generate, local_step
    from partition.model.tokenizer import load_tokenizer
    from partition.types import Segment

    check_chat_flags(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = resolve_model(args.model)
    tokenizer = load_tokenizer(source)
    ids = prompt_ids(args, tokenizer)
    limit = f"{source.name}'s context"
    request = build_request(args, ids, source.spec.max_context, limit)
    # the whole model's context is thousands of tokens: a request cut at its end would first run
    # for minutes, so it is refused, as the HTTP API refuses it
    check_new_tokens_fit(request, limit)
    model = load_segment(source, Segment.whole(source.spec.n_blocks))
    cache = model.new_cache(slots=1, max_len=request.context)
    eos = tuple(set(source.spec.eos_token_ids) | set(tokenizer.eos_ids))

    def show(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    step = local_step(model, cache, log_probs=request.logprobs is not None)
    result = generate(step, request, eos, tokenizer.decode, None if args.json else show)
    if args.json:
        out = {
            "model": source.name,
            "text": result.text,
            "token_ids": result.token_ids,
            "prompt_token_ids": result.prompt_token_ids,
            "finish_reason": result.finish_reason,
            "timings": result.timings(),
        }
        if request.logprobs is not None:
            out["logprobs"] = logprobs_json(result, tokenizer)
        print(json_out.dumps(out))
    else:
        sys.stdout.write("\n")
    return 0
