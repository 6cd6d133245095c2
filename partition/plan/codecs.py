"""What the planner knows about activation codecs (plan): plain numbers, no codec code.

The codecs themselves live in `partition/codec/` and need torch; the planner only needs their size and
speed, so it reads them as data. `DEFAULT_CODECS` holds estimates for a CPU worker; a table measured by
`benchmarks/codecs.py` (or written by hand) replaces them through `load_codec_table`.
"""

from __future__ import annotations

import json
from pathlib import Path

from partition.artifacts import decode_fields, read_text
from partition.errors import ConfigError
from partition.types import RAW_VALUE_BYTES, CodecSpec, Plan

CODEC_TABLE_SCHEMA = "partition/codec-table"
CODEC_TABLE_VERSION = 1


# Estimates for a CPU worker, until a measured table replaces them. Sizes are exact for the formats
# (int8: 32 values + one fp16 scale per block; the zstd ratios are what activations of SmolLM2 gave);
# speeds are round numbers in the range REFERENCES.md reports (zstd level 1 about 0.8-1.5 GB/s).
DEFAULT_CODECS: tuple[CodecSpec, ...] = (
    CodecSpec("raw", 4.0, 0.0, 0.0, lossless=True),
    CodecSpec("fp16", 2.0, 0.5e-9, 0.5e-9, lossless=False, encode_call_s=5e-6, decode_call_s=5e-6),
    CodecSpec("bf16", 2.0, 0.5e-9, 0.5e-9, lossless=False, encode_call_s=5e-6, decode_call_s=5e-6),
    CodecSpec("int8", 34 / 32, 1.5e-9, 0.7e-9, lossless=False, encode_call_s=20e-6, decode_call_s=10e-6),
    CodecSpec("shuffle-zstd", 3.4, 1.0e-9, 0.6e-9, lossless=True, encode_call_s=15e-6, decode_call_s=10e-6),
    CodecSpec("int8-zstd", 0.6, 2.5e-9, 1.2e-9, lossless=False, encode_call_s=35e-6, decode_call_s=20e-6),
)


def codec_names(codecs: tuple[CodecSpec, ...]) -> tuple[str, ...]:
    return tuple(codec.name for codec in codecs)


def select_codecs(codecs: tuple[CodecSpec, ...], names: list[str] | None) -> tuple[CodecSpec, ...]:
    """The codecs called `names` (all of them when `names` is None), in the order given."""
    if names is None:
        return codecs
    by_name = {codec.name: codec for codec in codecs}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ConfigError(f"unknown codec(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    if not names:
        raise ConfigError("--codecs needs at least one codec, e.g. --codecs raw")
    return tuple(by_name[name] for name in dict.fromkeys(names))


def plan_codecs(plan: Plan) -> tuple[CodecSpec, ...]:
    """The codecs `plan` was made to choose from, with the sizes and speeds it was made with (a plan
    that does not record them: the built-in estimates of those it names, every one when it names
    none): what planning it again, or predicting its stages again, must be given."""
    if plan.codec_figures:
        return plan.codec_figures
    return select_codecs(DEFAULT_CODECS, list(plan.codecs) or None)


def load_codec_table(path: Path) -> tuple[CodecSpec, ...]:
    """Codecs from a JSON file: our table format, or the results of `benchmarks/codecs.py`.

    Our format: {"schema": "partition/codec-table", "schema_version": 1, "codecs": [{name, bytes_per_value,
    encode_s_per_byte, decode_s_per_byte, lossless, encode_call_s?, decode_call_s?}, ...]}, or the list
    of entries alone (a plan's `codec_figures`, copied out). Benchmark results ({"results":
    [measurement, ...]}) are fitted per codec: seconds = call + bytes x per-byte.
    """
    text = read_text(Path(path), "codec table")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"codec table {path} is not valid JSON: {error}") from None
    if isinstance(data, dict) and "results" in data and "codecs" not in data:
        return _runnable(path, _from_measurements(path, data["results"]))
    if isinstance(data, list):  # the entries alone, as a plan's codec_figures holds them
        data = {"schema": CODEC_TABLE_SCHEMA, "schema_version": CODEC_TABLE_VERSION, "codecs": data}
    if not isinstance(data, dict) or data.get("schema") != CODEC_TABLE_SCHEMA:
        raise ConfigError(
            f'{path} is not a codec table: expected {{"schema": "{CODEC_TABLE_SCHEMA}", "schema_version": '
            f'{CODEC_TABLE_VERSION}, "codecs": [...]}}, a list of codec entries (as a plan\'s codec_figures), '
            "or the JSON that benchmarks/codecs.py writes"
        )
    version = data.get("schema_version")
    if version is None:
        raise ConfigError(
            f'{path}: the codec table has no schema_version; add "schema_version": {CODEC_TABLE_VERSION}'
        )
    if version != CODEC_TABLE_VERSION:
        raise ConfigError(
            f"{path}: codec table schema_version {version!r} is not {CODEC_TABLE_VERSION}; "
            "re-measure it with this version of partition"
        )
    entries = data.get("codecs")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: codecs must be a list of codec entries")
    return _runnable(
        path,
        tuple(decode_fields(CodecSpec, entry, str(path), f"codecs[{i}]") for i, entry in enumerate(entries)),
    )


def _runnable(path: Path, codecs: tuple[CodecSpec, ...]) -> tuple[CodecSpec, ...]:
    """`codecs` when a plan made from them can be served: at least one, each once, each one the
    workers can run (a plan naming another is refused only at deploy)."""
    known = codec_names(DEFAULT_CODECS)
    names = [codec.name for codec in codecs]
    if not names:
        raise ConfigError(f"{path}: the codec table is empty; give at least raw")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"{path}: no worker runs codec(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{path}: codec(s) {', '.join(twice)} given more than once; keep one entry each")
    # Whether a codec is exact is what the workers run, not a figure a table may set: a lossy link
    # marked lossless would pass for exact in the plan's table and in `--codecs raw shuffle-zstd`.
    exact = {codec.name: codec.lossless for codec in DEFAULT_CODECS}
    wrong = [codec for codec in codecs if codec.lossless != exact[codec.name]]
    if wrong:
        said = ", ".join(f"{c.name} is {'lossless' if exact[c.name] else 'lossy'}" for c in wrong)
        raise ConfigError(
            f"{path}: {said} (partition/codec/); set each entry's lossless to what its codec is"
        )
    return codecs


def _from_measurements(path: Path, results: object) -> tuple[CodecSpec, ...]:
    """Codecs fitted from measurement rows: `results` lists them, or (as benchmarks/codecs.py writes it)
    lists one entry per activation shape holding that shape's rows under "codecs"."""
    rows: dict[str, list[dict]] = {}
    try:
        for entry in results:
            for row in entry.get("codecs", [entry]):
                rows.setdefault(row["codec"], []).append(row)
        return tuple(_fit_codec(name, measured) for name, measured in rows.items())
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{path}: malformed codec measurement ({error})") from None


def _fit_codec(name: str, rows: list[dict]) -> CodecSpec:
    """Least squares of seconds against raw bytes over the measured shapes (one shape: per-byte only)."""
    raw = [RAW_VALUE_BYTES * float(row["n_values"]) for row in rows]
    encode = _fit_line(raw, [float(row["encode_s"]) for row in rows])
    decode = _fit_line(raw, [float(row["decode_s"]) for row in rows])
    largest = max(rows, key=lambda row: row["n_values"])
    return CodecSpec(
        name=name,
        bytes_per_value=float(largest["bytes_per_value"]),
        encode_s_per_byte=encode[1],
        decode_s_per_byte=decode[1],
        lossless=bool(largest["lossless"]),
        encode_call_s=encode[0],
        decode_call_s=decode[0],
    )


def _fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """(intercept, slope) >= 0 of y against x; through the origin when x has a single value."""
    n = len(x)
    mean_x, mean_y = sum(x) / n, sum(y) / n
    var = sum((xi - mean_x) ** 2 for xi in x)
    if var == 0:
        return 0.0, max(mean_y / mean_x, 0.0) if mean_x else 0.0
    slope = max(sum((xi - mean_x) * (yi - mean_y) for xi, yi in zip(x, y, strict=True)) / var, 0.0)
    return max(mean_y - slope * mean_x, 0.0), slope
