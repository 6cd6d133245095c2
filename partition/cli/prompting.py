"""Prompt and sampling options shared by `generate` and `serve`, and turning them into a request."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from partition.cli.arguments import non_empty

if (
    TYPE_CHECKING
):  # partition.model imports torch: a second, which --help and an early Ctrl-C must not wait for
    from partition.model.generation import GenerationRequest


def add_prompt_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--prompt", required=required, help="the prompt text")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--system", default=None, help="system message for --chat")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 = off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    parser.add_argument(
        "--min-p",
        type=float,
        default=0.0,
        help="sample from the tokens at least this times as likely as the likeliest (0-1; 0 = off)",
    )
    parser.add_argument("--seed", type=sampling_seed, default=None, help="seed for reproducible sampling")
    for penalty, counted in (("presence", "once"), ("frequency", "once per time it was drawn")):
        parser.add_argument(
            f"--{penalty}-penalty",
            type=float,
            default=0.0,
            help=f"subtracted from the logit of each token already drawn, {counted} (-2 to 2; 0 = off)",
        )
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="the logit of each token of the prompt or answer divided by it where positive, multiplied "
        "where negative (> 0; 1 = off)",
    )
    parser.add_argument(
        "--stop",
        action="append",
        default=[],
        type=non_empty("an empty one is found at once and ends the answer after one token"),
        help="stop string (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    parser.add_argument(
        "--logprobs",
        type=top_logprobs,
        default=None,
        metavar="N",
        help="with --json: each token's log-probability and the N likeliest in its place (0-20), in the "
        "shape of the HTTP API's chat replies",
    )


# The most alternatives --logprobs takes: MAX_TOP_LOGPROBS, written here so that --help imports no torch
MAX_LOGPROBS_ARGUMENT = 20


def top_logprobs(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_LOGPROBS_ARGUMENT:
        raise argparse.ArgumentTypeError(
            f"must be a whole number in [0, {MAX_LOGPROBS_ARGUMENT}], got {text}"
        )
    return value


top_logprobs.__name__ = "int"


def sampling_seed(text: str) -> int:
    """A seed that torch's generator takes; refused while parsing, in SamplingParams' words."""
    from partition.model.sampling import SamplingError, SamplingParams

    value = int(text)
    try:
        SamplingParams(seed=value)
    except SamplingError as error:
        raise argparse.ArgumentTypeError(f"must be {error.requirement}, got {text}") from None
    return value


sampling_seed.__name__ = "int"  # argparse says "invalid int value: 'x'" for text that is no number


def check_chat_flags(args: argparse.Namespace) -> None:
    """ConfigError for --system without --chat: the plain prompt has no place for it; and for
    --logprobs without --json, which is where they are written."""
    from partition.errors import ConfigError

    if args.system and not args.chat:
        raise ConfigError("--system is the chat's system message: give --chat too")
    if args.logprobs is not None and not args.json:
        raise ConfigError(
            "--logprobs are written in the --json output: give --json too (an HTTP client asks for them "
            "with logprobs in its request)"
        )


def logprobs_json(result, tokenizer) -> dict:
    """`--json`'s `logprobs`, where --logprobs asked: the HTTP API's chat shape (each token's text,
    bytes, log-probability and likeliest alternatives)."""
    from partition.api.logprobs import LogprobShapes
    from partition.api.requests import CHAT

    return {"content": LogprobShapes(CHAT, tokenizer).render(result.logprobs)["content"]}


def prompt_ids(args: argparse.Namespace, tokenizer) -> list[int]:
    prompt = utf8_text(args.prompt, "the prompt")
    if not args.chat:
        return tokenizer.encode(prompt)
    messages = [{"role": "system", "content": utf8_text(args.system, "--system")}] if args.system else []
    messages.append({"role": "user", "content": prompt})
    return tokenizer.encode(tokenizer.render_chat(messages), add_special=False)


def utf8_text(text: str, what: str) -> str:
    """`text` as given, or ConfigError when it came from bytes that are no UTF-8: Python keeps each such
    byte of an argument or a line of standard input as a lone surrogate (U+DC80-U+DCFF), which no
    tokenizer takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        from partition.errors import ConfigError

        char = text[error.start]
        byte = f"byte 0x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"U+{ord(char):04X}"
        raise ConfigError(
            f"{what} is not UTF-8 text ({byte} at character {error.start}); give it in UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)"
        ) from None
    return text


def build_request(
    args: argparse.Namespace, ids: list[int], max_context: int, limit: str, advice: str = "shorten it"
) -> GenerationRequest:
    """The request, its context sized to prompt + --max-new-tokens within `max_context` tokens.

    A prompt that leaves no room for a token is refused: the error says it does not fit `limit`
    (what holds `max_context` tokens, e.g. "smollm2-135m's context") and what would help (`advice`)."""
    from partition.errors import ConfigError
    from partition.model.generation import GenerationRequest, prompt_overflow
    from partition.model.sampling import SamplingParams

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    problem = prompt_overflow(len(ids), max_context, limit)
    if problem:
        raise ConfigError(f"{problem}; {advice}")
    sampling = SamplingParams(
        args.temperature,
        args.top_k,
        args.top_p,
        args.seed,
        args.presence_penalty,
        args.frequency_penalty,
        args.min_p,
        args.repetition_penalty,
    )
    context = min(max_context, len(ids) + args.max_new_tokens)
    return GenerationRequest(ids, args.max_new_tokens, sampling, tuple(args.stop), context, args.logprobs)


def check_new_tokens_fit(request: GenerationRequest, limit: str) -> None:
    """Refuse a request whose prompt and --max-new-tokens need more than its context (`limit`), in the
    words of the HTTP API's context_length_exceeded, instead of cutting it."""
    from partition.errors import ConfigError
    from partition.model.generation import new_tokens_overflow

    problem = new_tokens_overflow(
        len(request.prompt_ids), request.max_new_tokens, request.context, limit, "--max-new-tokens"
    )
    if problem:
        raise ConfigError(problem)
