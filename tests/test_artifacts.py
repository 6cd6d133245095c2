import json

import pytest

from partition.artifacts import (
    load_plan,
    load_profile,
    plan_from_json,
    plan_to_json,
    profile_from_json,
    profile_to_json,
    save_plan,
    save_profile,
)
from partition.errors import ConfigError
from partition.lab.config import load_lab_config
from partition.plan import load_cluster, load_codec_table, make_plan
from partition.plan.synthetic import star_cluster, synthetic_profile
from partition.types import Pinning, Workload


@pytest.fixture
def plan():
    edge = synthetic_profile("phone", speed=0.25)
    cluster = star_cluster(edge, 2.0, [("gpu", synthetic_profile("gpu", speed=20), 16.0)], (200, 5))
    return make_plan(cluster, Workload(64, 16))


def test_profile_round_trips(tmp_path):
    profile = synthetic_profile("phone", speed=0.5)
    assert profile_from_json(profile_to_json(profile)) == profile
    save_profile(profile, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == profile


def test_a_profile_written_before_the_top_k_costs_still_loads_without_them():
    import json

    profile = synthetic_profile("phone", speed=0.5)
    assert profile.top_k_encode_s > 0 and profile.top_k_decode_s > 0
    data = json.loads(profile_to_json(profile))
    del data["top_k_encode_s"], data["top_k_decode_s"]
    old = profile_from_json(json.dumps(data))
    assert (old.top_k_encode_s, old.top_k_decode_s) == (0.0, 0.0)  # not measured: the plan adds nothing
    assert old.head == profile.head


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d["block"]["decode"].update(c0=-1.0), "block.decode.c0 must be >= 0, got -1.0"),
        (lambda d: d["head"].update(weight_bytes=-5), "head.weight_bytes must be >= 0, got -5"),
        (lambda d: d["block"].update(kind="head"), "block.kind is 'head', not 'block'"),
        (lambda d: d.update(tied_weight_bytes=10**12), "tied_weight_bytes 1000000000000 is more than"),
        (lambda d: d["device"].update(threads=-1), "device.threads must be >= 1, got -1"),
        (lambda d: d["device"].update(threads=0), "device.threads must be >= 1, got 0"),
        (lambda d: d["device"].update(memory_bytes=-5), "device.memory_bytes must be >= 0, got -5"),
        (lambda d: d.update(dtype="int4"), "dtype 'int4' is not one of float32, float16, bfloat16"),
        (lambda d: d.update(context_tokens_max=-1), "context_tokens_max must be >= 0, got -1"),
        (
            lambda d: d["block"]["decode"].update(c0=10**400),
            "block.decode.c0: expected a finite number, got 1000",
        ),
    ],
)
def test_a_profile_no_profiler_writes_is_refused_before_it_plans(change, says):
    """A negative decode time put all 30 blocks on a quarter-core edge, at a TPOT of -30 s."""
    data = json.loads(profile_to_json(synthetic_profile("phone", speed=0.5)))
    change(data)
    with pytest.raises(ConfigError) as refused:
        profile_from_json(json.dumps(data), "phone.json")
    assert str(refused.value).startswith("phone.json: ") and says in str(refused.value)
    assert "profile the device again" in str(refused.value)


def test_plan_round_trips_with_the_documented_fields(plan, tmp_path):
    data = json.loads(plan_to_json(plan))
    assert data["schema"] == "partition/plan" and data["schema_version"] == 1
    assert data["model"] == {
        "name": "smollm2-135m",
        "digest": "synthetic-smollm2",
        "n_blocks": 30,
        "n_units": 32,
    }
    assert set(data["stages"][0]) == {"device", "start", "end", "codec_out"}
    assert {"ttft_s", "tpot_s", "total_s", "stages", "links"} <= set(data["predicted"])
    assert [b["name"] for b in data["baselines"]] == [
        "even",
        "memory_proportional",
        "memory_proportional_edge_first",
        "edge_only",
        "best_single_server",
    ]
    assert data["edge_threads"] == 1  # the synthetic edge profile's threads
    # what a re-plan keeps to: the units pinned to the edge and the codecs the planner could choose from
    assert data["pin"] == {"embed": True, "head": False}
    assert data["codecs"] == ["raw", "fp16", "bf16", "int8", "shuffle-zstd", "int8-zstd"]
    save_plan(plan, tmp_path / "plan.json")
    assert load_plan(tmp_path / "plan.json") == plan


def test_a_plan_written_before_edge_threads_still_loads(plan):
    older = plan_from_json(_mutated(plan, lambda d: d.pop("edge_threads")))
    assert older.edge_threads == 0 and older.stages == plan.stages


def test_a_plan_written_before_pin_codecs_and_their_figures_still_loads(plan):
    older = plan_from_json(_mutated(plan, lambda d: [d.pop("pin"), d.pop("codecs"), d.pop("codec_figures")]))
    assert older.pin == Pinning() and older.codecs == () and older.stages == plan.stages


def _mutated(plan, change) -> str:
    data = json.loads(plan_to_json(plan))
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema="partition/device-profile"), "not a partition/plan file"),
        (lambda d: d.update(schema_version=2), "schema_version 2"),
        (lambda d: d.pop("epoch"), "epoch is missing"),
        (lambda d: d.update(epoch="one"), "epoch: expected int"),
        (lambda d: d["stages"][0].update(end=0), r"stages\[0\].start/end"),
        (lambda d: d["stages"][1].pop("codec_out"), r"stages\[1\].codec_out is missing"),
        (lambda d: d.update(surprise=1), "top level: unknown field"),
        (lambda d: d["stages"][0].update(surprise=1), r"stages\[0\]: unknown field\(s\) surprise"),
        (lambda d: d["model"].update(n_units=7), "n_units 7 disagrees"),
        (lambda d: d["stages"].pop(), "cover units"),
        (lambda d: d["predicted"].update(ttft_s=None), "predicted.ttft_s: expected float"),
        (lambda d: d.update(edge_threads=-2), "edge_threads must be 0"),
        (lambda d: d.update(epoch=-1), r"epoch must be in \[1, 18446744073709551615\], got -1"),
        (lambda d: d.update(epoch=0), r"epoch must be in \[1, 18446744073709551615\], got 0"),
        (
            lambda d: d["stages"][1].update(device="../../x"),
            r"stages\[1\].device: the device name '../../x' is",
        ),
        (lambda d: d.update(edge="a/b"), "edge: the device name 'a/b' is not one plain word"),
        (lambda d: d.update(plan_id=" "), "plan_id is empty"),
        (
            lambda d: d["stages"][1].update(codec_out="lz9000"),
            r"stages\[1\].codec_out 'lz9000' is not a codec the workers run \(raw, fp16",
        ),
        (
            lambda d: d.update(epoch=2**64),
            r"epoch must be in \[1, 18446744073709551615\], got 18446744073709551616",
        ),
    ],
)
def test_malformed_plans_name_the_problem(plan, change, message):
    with pytest.raises(ConfigError, match=message) as error:
        plan_from_json(_mutated(plan, change), "plan.json")
    assert "plan.json" in str(error.value) and "partition plan" in str(error.value)


def test_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_profile(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not a partition/device-profile"):
        profile_from_json("[1, 2]")


def test_a_write_that_fails_leaves_no_temporary_file(plan, tmp_path):
    (tmp_path / "plan.json").mkdir()  # a folder where the file would go: the rename fails
    with pytest.raises(ConfigError, match=r"cannot write .*plan.json: Is a directory; give another path"):
        save_plan(plan, tmp_path / "plan.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


@pytest.mark.parametrize(
    ("load", "kind"),
    [
        (load_plan, "file"),
        (load_cluster, "cluster file"),
        (load_codec_table, "codec table"),
        (load_lab_config, "lab config"),
    ],
)
def test_a_file_that_is_not_utf8_is_named_with_what_to_do(tmp_path, load, kind):
    """UTF-16, as PowerShell's `>` writes a file, or a binary given by mistake."""
    path = tmp_path / "given"
    path.write_text('name = "edge"\n', encoding="utf-16")
    with pytest.raises(
        ConfigError, match=f"^{kind} .*given is not UTF-8 text .* at byte 0\\); save it as UTF-8"
    ):
        load(path)
