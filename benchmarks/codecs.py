"""Every activation codec on synthetic activations with outlier channels: size, speed, error.

    python benchmarks/codecs.py [--seq 1 16 128] [--hidden 576] [--repeats 50] [--json out/codecs.json]

Prints one table per shape (ratio is raw fp32 bytes / encoded bytes), writes JSON, ends with one
summary line. Per-token int8 (one scale per token, no blocks) is shown as a reference error only, on the
values outside the outlier channels' blocks: it is what blockwise int8 exists to avoid.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from partition.codec import CODECS, get_codec
from partition.codec.measure import CodecMeasurement, measure_codec
from partition.codec.synthetic import synthetic_activations

OUTLIER_COLUMNS = (7, 123, 400)  # a few massive channels, as in real hidden states


def clean_block_errors(
    x: torch.Tensor, outlier_columns: tuple[int, ...], block: int = 32
) -> dict[str, float]:
    """Relative L2 error, over the blocks holding no outlier column, of blockwise and per-token int8.

    Over the whole tensor both errors are dominated by the outliers' own blocks, which hides the point:
    with one scale per token, every ordinary value is quantized with the outliers' step.
    """
    codec = get_codec("int8")
    y_block = codec.decode(codec.encode(x), x.shape)
    scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-30) / 127
    y_token = torch.round(x / scale) * scale
    clean = torch.ones(x.shape[-1], dtype=torch.bool)
    for column in outlier_columns:
        clean[column // block * block : column // block * block + block] = False
    x_clean = x[..., clean]
    return {
        "int8_blockwise": float((y_block[..., clean] - x_clean).norm() / x_clean.norm()),
        "int8_per_token": float((y_token[..., clean] - x_clean).norm() / x_clean.norm()),
    }


def table(rows: list[CodecMeasurement]) -> str:
    header = (
        f"{'codec':<13}{'B/value':>8}{'ratio':>7}{'enc us':>9}{'dec us':>9}"
        f"{'enc GB/s':>10}{'dec GB/s':>10}{'max abs err':>13}{'rel L2 err':>12}"
    )
    lines = [header, "-" * len(header)]
    for m in rows:
        lines.append(
            f"{m.codec:<13}{m.bytes_per_value:>8.3f}{m.ratio_vs_raw:>7.2f}{m.encode_s * 1e6:>9.1f}"
            f"{m.decode_s * 1e6:>9.1f}{m.encode_gbps:>10.2f}{m.decode_gbps:>10.2f}"
            f"{m.max_abs_error:>13.3g}{m.rel_l2_error:>12.2e}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[1, 16, 128], help="sequence lengths (tokens)")
    parser.add_argument("--hidden", type=int, default=576, help="hidden size (SmolLM2-135M: 576)")
    parser.add_argument("--outlier-scale", type=float, default=200.0, help="outlier channels / typical value")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per codec (median reported)")
    parser.add_argument("--json", type=Path, default=Path("out/codecs.json"), help="where to write results")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # codecs run on a stage's serving thread; measure them that way
    results = []
    for seq in args.seq:
        x = synthetic_activations(
            seq=seq, hidden=args.hidden, outlier_columns=OUTLIER_COLUMNS, outlier_scale=args.outlier_scale
        )
        rows = [measure_codec(get_codec(name), x, repeats=args.repeats) for name in CODECS]
        clean = clean_block_errors(x, OUTLIER_COLUMNS)
        print(f"\nactivations [1, {seq}, {args.hidden}] with outlier channels x{args.outlier_scale:g}")
        print(table(rows))
        print(
            f"blocks without outliers: rel L2 err int8 blockwise {clean['int8_blockwise']:.2e}, "
            f"per-token int8 (no blocks, reference) {clean['int8_per_token']:.2e}"
        )
        results.append(
            {
                "shape": [1, seq, args.hidden],
                "clean_block_rel_l2_error": clean,
                "codecs": [m.as_dict() for m in rows],
            }
        )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": 1,
        "repeats": args.repeats,
    }
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))

    last = {m["codec"]: m for m in results[-1]["codecs"]}
    int8, shuffle = last["int8"], last["shuffle-zstd"]
    print(
        f"\nsummary: seq {args.seq[-1]}: int8 {int8['ratio_vs_raw']:.2f}x smaller than raw "
        f""
        f"(rel err off the outlier blocks {clean['int8_blockwise']:.1e}, per-token int8 {clean['int8_per_token']:.1e}), "
        f"int8-zstd {last['int8-zstd']['ratio_vs_raw']:.2f}x, shuffle-zstd {shuffle['ratio_vs_raw']:.2f}x lossless; "
        f"JSON in {args.json}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
