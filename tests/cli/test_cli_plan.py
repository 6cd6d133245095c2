import json
import re

import pytest

from partition.artifacts import load_plan, save_profile
from partition.cli import main
from partition.plan.synthetic import synthetic_profile
from partition.types import MAX_SESSIONS

CLUSTER = """
[[device]]
name = "phone"
role = "edge"
profile = "phone.json"
memory_gb = 2.0
[[device]]
name = "server-a"
role = "server"
profile = "server.json"
[[device]]
name = "server-b"
role = "server"
profile = "server.json"
memory_gb = 0.1
[[link]]
from = "phone"
to = "server-a"
bandwidth_mbps = 200
latency_ms = 5
"""


@pytest.fixture
def cluster(tmp_path):
    save_profile(synthetic_profile("phone", speed=0.2), tmp_path / "phone.json")
    save_profile(synthetic_profile("server", speed=10, memory_gb=16), tmp_path / "server.json")
    (tmp_path / "cluster.toml").write_text(CLUSTER)
    return tmp_path


def test_plan_prints_the_table_and_writes_the_plan(cluster, capsys):
    out = cluster / "plan.json"
    args = ["plan", "--model", "smollm2-135m", "--cluster", str(cluster / "cluster.toml"), "--out", str(out)]
    assert main([*args, "--prompt-tokens", "64", "--new-tokens", "32"]) == 0
    text = capsys.readouterr().out
    plan = load_plan(out)
    assert [s.device for s in plan.stages] == ["phone", "server-a"]  # the head too: top logits come back
    assert plan.epoch == 1 and plan.unused == ("server-b",)
    for expected in (
        "block.0-29",
        "unused: server-b (no chain can reach it from the edge and come back",
        "TTFT",
    ):
        assert expected in text
    assert re.search(r"-> phone +cut 32 +top-k +512 B", text)
    # a small lossy codec wins this link; the table says it is lossy and how to stay exact
    assert re.search(r"-> server-a +cut \d+ +int8(-zstd)? \(lossy\)", text)
    assert "(--codecs raw shuffle-zstd keeps every link exact)" in text
    assert "infeasible: no link from server-a to server-b" in text  # even needs a link that is not declared
    assert f"wrote {out}" in text

    # planning again over the same file raises the epoch; codecs can be restricted
    assert main([*args, "--codecs", "raw", "fp16"]) == 0
    again = load_plan(out)
    assert again.epoch == 2 and {s.codec_out for s in again.stages} <= {"raw", "fp16"}
    assert json.loads(out.read_text())["workload"]["prompt_tokens"] == 128

    capsys.readouterr()
    assert main([*args, "--codecs", "raw", "shuffle-zstd"]) == 0
    assert "lossy" not in capsys.readouterr().out

    assert main([*args, "--head-on-edge"]) == 0
    assert [s.device for s in load_plan(out).stages] == ["phone", "server-a", "phone"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "llama-70b"], "measured for model 'smollm2-135m'"),
        (  # refused by every worker at deploy: said when planning
            ["--model", "smollm2-135m", "--sessions", str(MAX_SESSIONS + 1)],
            f"--sessions {MAX_SESSIONS + 1}: every stage holds each session, and a worker holds at most "
            f"{MAX_SESSIONS} at once; plan with --sessions {MAX_SESSIONS} or fewer",
        ),
        (["--model", "smollm2-135m", "--codecs", "gzip"], "unknown codec"),
        *(
            (
                ["--model", "smollm2-135m", "--min-gain", value],
                f"--min-gain {value}: give a fraction of the objective from 0 to below 1",
            )
            for value in ("1.5", "-0.1", "nan")
        ),
        (["--model", "smollm2-135m", "--epoch", "0"], "--epoch must be in [1, 18446744073709551615], got 0"),
        (["--model", "smollm2-135m", "--epoch", str(2**64)], "--epoch must be in [1, 18446744073709551615]"),
        (
            ["--model", "smollm2-135m", "--prompt-tokens", "8000", "--new-tokens", "200"],
            "--prompt-tokens 8000 + --new-tokens 200 = 8200 tokens per session, over smollm2-135m's context of 8192",
        ),
        (
            ["--model", "smollm2-135m", "--edge", "phone"],
            "--edge names the edge of a Ray cluster: use it with --ray",
        ),
    ],
)
def test_plan_errors_are_one_line_with_exit_code_2(cluster, capsys, extra, message):
    code = main(
        ["plan", "--cluster", str(cluster / "cluster.toml"), "--out", str(cluster / "p.json"), *extra]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_plan_writes_over_nothing_but_a_plan(cluster, capsys):
    toml = cluster / "cluster.toml"
    args = ["plan", "--model", "smollm2-135m", "--cluster", str(toml)]
    for out, says in (
        (cluster, f"argument --out: {cluster} is a directory; give a file in it"),
        (toml / "plan.json", f"argument --out: {toml} is a file, so {toml / 'plan.json'} cannot be made"),
    ):  # refused as the command line is read, before any planning
        with pytest.raises(SystemExit) as usage:
            main([*args, "--out", str(out)])
        assert usage.value.code == 2 and says in capsys.readouterr().err
    # the cluster file given as --out (a slip of the tab key), with an epoch or without: left as it is
    for epoch in ([], ["--epoch", "3"]):
        assert main([*args, "--out", str(toml), *epoch]) == 2
        assert "exists and is not a plan this can replace" in capsys.readouterr().err
        assert toml.read_text() == CLUSTER
    assert not list(cluster.glob("*.tmp"))


def test_plan_takes_the_model_by_any_name_of_the_weights_profiled_and_says_what_else_would_do(
    tmp_path, capsys, smollm2, tiny_dirs
):
    from partition.types import ModelRef

    model = ModelRef(smollm2.name, smollm2.digest, smollm2.spec.n_blocks)  # as a real profile records it
    save_profile(synthetic_profile("phone", speed=0.2, model=model), tmp_path / "phone.json")
    save_profile(synthetic_profile("server", speed=10, memory_gb=16, model=model), tmp_path / "server.json")
    (tmp_path / "cluster.toml").write_text(CLUSTER)
    args = ["plan", "--cluster", str(tmp_path / "cluster.toml"), "--out", str(tmp_path / "p.json")]
    assert main([*args, "--model", str(smollm2.path)]) == 0  # the file the built-in name loads
    assert load_plan(tmp_path / "p.json").model == model
    capsys.readouterr()

    other = str(tiny_dirs["llama"])
    assert main([*args, "--model", other]) == 2
    err = capsys.readouterr().err
    assert f"measured for model 'smollm2-135m' (digest {smollm2.digest[:12]}), not '{other}' (digest " in err
    assert f"plan with --model smollm2-135m or profile the devices with --model {other}" in err

    assert main([*args, "--model", "gpt2"]) == 2  # nothing this machine can load: no advice to profile it
    err = capsys.readouterr().err
    assert "--model 'gpt2': " in err and "profile the devices with" not in err and err.count("\n") == 1
