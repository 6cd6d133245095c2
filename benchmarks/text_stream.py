"""What streaming text costs the edge per token (serve): TextStream against decoding the whole text.

    python benchmarks/text_stream.py [--tokens 500 2000] [--repeats 5] [--json out/text_stream.json]

`generate` pushes each token into a TextStream between two steps, so this cost sits on TPOT, and on
a quarter-core edge it has a quarter of a core. Both ways run over the same ids of the default model's
tokenizer (mixed text: accents, euro signs, an emoji, so tokens end inside characters), with the chat
stop string. The reference decodes the whole text at every token (what a stream without state does).
Both must hand out the same text. Ends with one summary line and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from partition.model import resolve_model
from partition.model.generation import TextStream
from partition.model.tokenizer import load_tokenizer

SAMPLE = "Le café coûte 3 €. The quick brown fox jumps over the lazy dog 😀. "
STOP = ("<|im_end|>",)


def stream_all(ids: list[int], decode) -> tuple[float, str]:
    """Seconds per token through TextStream, and the text it handed out."""
    stream = TextStream(decode, STOP)
    started = time.perf_counter()
    out = "".join(stream.push(token) for token in ids)
    return (time.perf_counter() - started) / len(ids), out


def decode_whole_each_token(ids: list[int], decode) -> tuple[float, str]:
    """Seconds per token decoding ids[:i + 1] at every token, and the final text."""
    started = time.perf_counter()
    for i in range(len(ids)):
        text = decode(ids[: i + 1])
    return (time.perf_counter() - started) / len(ids), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[500, 2000])
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs per way and length; the median is quoted"
    )
    parser.add_argument("--json", type=Path, default=Path("out/text_stream.json"))
    args = parser.parse_args()

    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    rows = []
    print(f"{'tokens':>7}{'TextStream us/token':>22}{'whole text us/token':>22}{'ratio':>8}")
    for n in args.tokens:
        ids = tokenizer.encode(SAMPLE * (n // 10 + 1))[:n]
        ours, whole = [], []
        for _ in range(args.repeats):  # alternate, so a busier moment hits both
            seconds, streamed = stream_all(ids, tokenizer.decode)
            ours.append(seconds)
            seconds, full = decode_whole_each_token(ids, tokenizer.decode)
            whole.append(seconds)
        if streamed != full:
            raise SystemExit(f"TextStream handed out other text than the whole decode at {n} tokens")
        row = {
            "tokens": n,
            "text_stream_s": statistics.median(ours),
            "whole_text_s": statistics.median(whole),
        }
        row["ratio"] = row["whole_text_s"] / row["text_stream_s"]
        rows.append(row)
        print(
            f"{n:>7}{row['text_stream_s'] * 1e6:>22.1f}{row['whole_text_s'] * 1e6:>22.1f}{row['ratio']:>7.1f}x"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": platform.machine(), "rows": rows}, indent=2))
    last = rows[-1]
    print(
        f"text_stream: at {last['tokens']} tokens TextStream {last['text_stream_s'] * 1e6:.1f} us/token, "
        f"whole-text decode {last['whole_text_s'] * 1e6:.1f} us/token ({last['ratio']:.1f}x); same text; "
        f"JSON in {args.json}"
    )


if __name__ == "__main__":
    main()
