import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from partition.errors import ConfigError
from partition.plan import make_plan
from partition.plan.codecs import DEFAULT_CODECS, CodecSpec, load_codec_table, plan_codecs, select_codecs
from tests.plan.plan_kit import random_case

REPO = Path(__file__).resolve().parents[2]


def test_default_table_has_the_documented_sizes():
    sizes = {c.name: c.bytes_per_value for c in DEFAULT_CODECS}
    assert sizes["raw"] == 4 and sizes["fp16"] == sizes["bf16"] == 2
    assert 1.0 < sizes["int8"] < 1.1 and sizes["int8-zstd"] < 1 and 3 < sizes["shuffle-zstd"] < 4
    assert {c.name for c in DEFAULT_CODECS if c.lossless} == {"raw", "shuffle-zstd"}


def test_wire_bytes_and_codec_seconds():
    codec = CodecSpec("x", 1.0, 1e-9, 2e-9, False, encode_call_s=1e-5, decode_call_s=2e-5)
    assert codec.wire_bytes(4000) == 1000
    assert codec.codec_s(4000) == pytest.approx(3e-5 + 4000 * 3e-9)
    assert codec.codec_s(0) == 0


def test_select_keeps_order_and_rejects_unknown_names():
    assert [c.name for c in select_codecs(DEFAULT_CODECS, ["int8", "raw"])] == ["int8", "raw"]
    assert select_codecs(DEFAULT_CODECS, None) == DEFAULT_CODECS
    with pytest.raises(ConfigError, match="unknown codec.*zip.*known: raw"):
        select_codecs(DEFAULT_CODECS, ["zip"])


def test_a_plan_is_planned_again_from_the_codecs_it_chose_from():
    cluster, workload, _, pin = random_case(random.Random(7))
    plan = make_plan(cluster, workload, select_codecs(DEFAULT_CODECS, ["int8", "raw"]), pin=pin)
    assert [codec.name for codec in plan_codecs(plan)] == ["int8", "raw"]
    # a plan that records none (written before plans named them) chose from every default codec
    assert plan_codecs(dataclasses.replace(plan, codecs=(), codec_figures=())) == DEFAULT_CODECS


def test_a_plan_keeps_the_measured_figures_it_was_made_with_for_a_re_plan(tmp_path):
    """A measured table's slow codecs stay slow when the plan is read back and planned again, instead of
    the built-in estimates of the same names."""
    from partition.artifacts import load_plan, plan_from_json, plan_to_json, save_plan

    measured = (
        CodecSpec("raw", 4.0, 0.0, 0.0, True),
        CodecSpec("int8-zstd", 0.6, 6e-7, 6e-7, False),  # far slower here than the estimate's 2.5e-9
    )
    cluster, workload, _, pin = random_case(random.Random(7))
    plan = make_plan(cluster, workload, measured, pin=pin)
    save_plan(plan, tmp_path / "plan.json")
    again = load_plan(tmp_path / "plan.json")
    assert plan_codecs(again) == measured
    replanned = make_plan(cluster, again.workload, plan_codecs(again), pin=again.pin, epoch=2)
    assert replanned.stages == plan.stages and replanned.predicted == plan.predicted
    # a plan written before plans recorded the figures reads as one made with the estimates
    older = json.loads(plan_to_json(plan))
    del older["codec_figures"]
    assert plan_codecs(plan_from_json(json.dumps(older))) == select_codecs(
        DEFAULT_CODECS, ["raw", "int8-zstd"]
    )
    broken = json.loads(plan_to_json(plan))
    broken["codec_figures"][1]["decode_s_per_byte"] = -1
    broken = json.dumps(broken)
    with pytest.raises(ConfigError, match=r"codec_figures\[1\].*must be finite, >= 0"):
        plan_from_json(broken)


def test_load_our_table_format(tmp_path):
    path = tmp_path / "codecs.json"
    entry = {
        "name": "raw",
        "bytes_per_value": 4,
        "encode_s_per_byte": 0,
        "decode_s_per_byte": 0,
        "lossless": True,
    }
    path.write_text(json.dumps({"schema": "partition/codec-table", "schema_version": 1, "codecs": [entry]}))
    assert load_codec_table(path) == (CodecSpec("raw", 4.0, 0.0, 0.0, True),)
    path.write_text(json.dumps({"schema": "partition/codec-table", "schema_version": 9, "codecs": []}))
    with pytest.raises(ConfigError, match="schema_version 9"):
        load_codec_table(path)
    path.write_text(
        json.dumps({"schema": "partition/codec-table", "schema_version": 1, "codecs": [{"name": "raw"}]})
    )
    with pytest.raises(ConfigError, match=r"codecs\[0\]\.bytes_per_value is missing"):
        load_codec_table(path)


def test_a_plans_codec_figures_copied_out_are_a_codec_table(tmp_path):
    from partition.artifacts import plan_to_json
    from partition.plan import make_plan
    from partition.plan.synthetic import star_cluster, synthetic_profile
    from partition.types import Workload

    cluster = star_cluster(
        synthetic_profile("phone", 0.3), 2.0, [("server", synthetic_profile("server"), 8.0)], (100, 5)
    )
    figures = json.loads(plan_to_json(make_plan(cluster, Workload(16, 16))))["codec_figures"]
    assert len(figures) > 1
    path = tmp_path / "codecs.json"
    path.write_text(json.dumps(figures))
    assert [codec.name for codec in load_codec_table(path)] == [entry["name"] for entry in figures]


def test_a_codec_table_without_its_version_says_what_to_add(tmp_path):
    path = tmp_path / "codecs.json"
    path.write_text(json.dumps({"schema": "partition/codec-table", "codecs": []}))
    with pytest.raises(ConfigError, match='the codec table has no schema_version; add "schema_version": 1$'):
        load_codec_table(path)
    path.write_text(json.dumps({"codecs": []}))
    with pytest.raises(ConfigError, match="a list of codec entries \\(as a plan's codec_figures\\)"):
        load_codec_table(path)


RAW = {"name": "raw", "bytes_per_value": 4, "encode_s_per_byte": 0, "decode_s_per_byte": 0, "lossless": True}


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ([], "the codec table is empty; give at least raw"),
        ([{**RAW, "name": "gzip"}], "no worker runs codec(s) 'gzip'; known: raw, fp16"),
        ([RAW, {**RAW, "bytes_per_value": 0.01}], "codec(s) raw given more than once"),
        ([{**RAW, "lossless": "false"}], "codecs[0].lossless: expected bool, got 'false'"),
        ([{**RAW, "bytes_per_value": True}], "codecs[0].bytes_per_value: expected float, got true"),
        ([{**RAW, "speed": 1}], "codecs[0]: unknown field(s) speed"),
        ([RAW, {**RAW, "name": "int8", "encode_s_per_byte": -1}], "codecs[1]: codec 'int8': sizes and times"),
        (["raw"], "codecs[0]: expected an object, got 'raw'"),
        # a lossy codec said to be exact would pass for exact in the plan's table and in --codecs
        (
            [{**RAW, "name": "fp16", "bytes_per_value": 2}],
            "fp16 is lossy (partition/codec/); set each entry's",
        ),
        ([{**RAW, "lossless": False}], "raw is lossless (partition/codec/)"),
    ],
)
def test_a_codec_table_a_plan_could_not_be_served_from_is_refused_naming_the_entry(tmp_path, entries, says):
    path = tmp_path / "codecs.json"
    path.write_text(json.dumps({"schema": "partition/codec-table", "schema_version": 1, "codecs": entries}))
    with pytest.raises(ConfigError) as refused:
        load_codec_table(path)
    assert str(refused.value).startswith(f"{path}: ") and says in str(refused.value)


def test_load_benchmark_results_fits_call_and_per_byte_costs(tmp_path):
    rows = [
        # encode: 10 us per call + 1 ns per fp32 byte; decode: 0.5 ns per byte
        {
            "codec": "int8",
            "n_values": n,
            "bytes_per_value": 1.0625,
            "lossless": False,
            "encode_s": 1e-5 + 4 * n * 1e-9,
            "decode_s": 4 * n * 0.5e-9,
        }
        for n in (576, 576 * 16, 576 * 128)
    ]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"meta": {}, "results": rows}))
    (codec,) = load_codec_table(path)
    assert codec.name == "int8" and codec.bytes_per_value == 1.0625 and not codec.lossless
    assert codec.encode_call_s == pytest.approx(1e-5) and codec.encode_s_per_byte == pytest.approx(1e-9)
    assert codec.decode_call_s == pytest.approx(0, abs=1e-12) and codec.decode_s_per_byte == pytest.approx(
        0.5e-9
    )


def test_the_json_benchmarks_codecs_writes_is_a_codec_table(tmp_path):
    out = tmp_path / "codecs.json"
    subprocess.run(
        [sys.executable, "benchmarks/codecs.py", "--seq", "1", "4", "--hidden", "64", "--repeats", "2",
         "--json", str(out)],
        check=True, capture_output=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    codecs = load_codec_table(out)
    assert [codec.name for codec in codecs] == [codec.name for codec in DEFAULT_CODECS]
    assert {codec.name for codec in codecs if codec.lossless} == {"raw", "shuffle-zstd"}
    assert all(codec.encode_s_per_byte >= 0 and codec.bytes_per_value > 0 for codec in codecs)


def test_bad_codec_numbers_are_rejected():
    with pytest.raises(ConfigError, match="finite"):
        CodecSpec("x", 0.0, 0.0, 0.0, True)
    with pytest.raises(ConfigError, match="finite"):
        CodecSpec("x", 1.0, -1.0, 0.0, True)
