"""Outputs and devices a run cannot use are refused before its work, with the flag named (profile, plan,
bench): a folder or a path under a file as an output, a device this machine lacks, an endless --min-time."""

import pytest
import torch

from partition.artifacts import write_atomically
from partition.cli import main
from partition.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["bench", "--plan", "plan.json", "--json", "{folder}"], "argument --json: {folder} is a directory"),
        (["bench", "--plan", "plan.json", "--plot", "{folder}"], "argument --plot: {folder} is a directory"),
        (
            ["bench", "--plan", "plan.json", "--plot", "{folder}/timeline.html"],
            "argument --plot: {folder}/timeline.html: the image format is taken from the suffix; give a file "
            "ending in .png, .svg, .pdf",
        ),
        (
            ["profile", "--model", "smollm2-135m", "--out", "{folder}"],
            "argument --out: {folder} is a directory",
        ),
        (
            ["profile", "--model", "smollm2-135m", "--out", "{file}/device.json"],
            "argument --out: {file} is a file, so {file}/device.json cannot be made",
        ),
        # written beside and renamed over: a device would be replaced by a file (as root, /dev/null too)
        (
            ["plan", "--model", "smollm2-135m", "--out", "/dev/null"],
            "argument --out: /dev/null is not a regular file (a device, a pipe, a socket); give a file",
        ),
        (["plan", "--model", "smollm2-135m", "--out", ""], "argument --out: an empty path; give a file"),
        # a name longer than a file system takes (it was a traceback), or one the ".tmp" beside it overflows
        *(
            (
                ["plan", "--model", "smollm2-135m", "--out", "{folder}/" + "p" * length],
                "argument --out: {folder}/" + "p" * length + ": the file name is too long (at most 251 "
                "bytes); give a shorter one",
            )
            for length in (300, 252)
        ),
        # the report goes to standard output: a file named "-" would be written instead
        *(
            (
                argv,
                f"argument {argv[-2]}: '-' (standard output) cannot take the file: this command prints "
                "its report there; give a file path",
            )
            for argv in (
                ["plan", "--model", "smollm2-135m", "--out", "-"],
                ["profile", "--model", "smollm2-135m", "--out", "-"],
                ["lab", "up", "--config", "lab.toml", "--out", "-"],
                ["bench", "--plan", "plan.json", "--json", "-"],
            )
        ),
    ],
)
def test_an_output_that_cannot_be_a_file_is_a_usage_error(tmp_path, monkeypatch, capsys, argv, says):
    monkeypatch.chdir(tmp_path)  # where a file named "-" would land
    (tmp_path / "a-file").write_text("")
    names = {"folder": tmp_path, "file": tmp_path / "a-file"}
    with pytest.raises(SystemExit) as usage:
        main([a.format(**names) for a in argv])
    assert usage.value.code == 2 and says.format(**names) in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_a_min_time_no_sample_can_reach_is_a_usage_error(capsys, value):
    with pytest.raises(SystemExit) as usage:
        main(["profile", "--model", "smollm2-135m", "--min-time", value])
    assert (
        usage.value.code == 2 and "argument --min-time: must be 0 seconds or more" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("device", "says"),
    [
        ("gpu", "--device 'gpu' is not a torch device; use cpu, cuda or cuda:N"),
        pytest.param(
            "cuda",
            "--device cuda: this machine has no CUDA device; use --device cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device"),
        ),
    ],
)
def test_a_device_this_machine_cannot_profile_is_refused_before_the_model_loads(
    tmp_path, capsys, device, says
):
    out = tmp_path / "device.json"
    assert main(["profile", "--model", "smollm2-135m", "--device", device, "--out", str(out)]) == 2
    assert says in capsys.readouterr().err and not out.exists()


def test_a_write_under_a_file_says_where_and_leaves_nothing_beside_it(tmp_path):
    (tmp_path / "a-file").write_text("")
    for under in ("plan.json", "deeper/plan.json"):
        with pytest.raises(ConfigError) as refused:
            write_atomically(tmp_path / "a-file" / under, "{}")
        said = f"cannot write {tmp_path}/a-file/{under}: {tmp_path}/a-file is a file, not a folder; give another path"
        assert str(refused.value) == said
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_an_input_larger_than_any_artifact_is_refused_without_reading_it_all(capsys):
    """/dev/zero as a plan: read up to the bound, not until the memory is full."""
    assert main(["serve", "--plan", "/dev/zero"]) == 2
    assert "file /dev/zero is over 64 MiB, more than any plan, profile or configuration holds" in (
        capsys.readouterr().err
    )
