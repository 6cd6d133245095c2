"""Finding labs by their state files, and the commands the lab tells its user to type (no root needed)."""

import argparse
import os
import sys

import pytest

from partition.cli import lab as lab_cli
from partition.errors import LabError
from partition.lab import find
from partition.lab.lab import child_env
from partition.lab.state import DEFAULT_STATE_DIR, LabState, lab_command, state_dir, state_path


def test_a_state_dir_that_is_a_file_is_refused_by_name(tmp_path):
    not_a_directory = tmp_path / "state"
    not_a_directory.write_text("")
    with pytest.raises(
        LabError, match=f"{not_a_directory} \\(from --state-dir\\) is a file, not a directory"
    ):
        state_dir(not_a_directory)


def test_find_names_the_labs_that_are_up(tmp_path):
    for name in ("a", "b"):
        LabState(name=name, path=state_path(tmp_path, name)).save()
    with pytest.raises(LabError, match="^no lab 'x' is up; labs up: a, b$"):
        find("x", tmp_path)
    with pytest.raises(LabError, match="name the lab with --name \\(labs up: a, b\\)"):
        find(None, tmp_path)
    assert find("b", tmp_path).name == "b"


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d.update(devices=5), "devices is not a dict"),
        (lambda d: d.update(netns="ns0"), "netns is not a list"),
        (lambda d: d.update(processes=[{"pid": "x"}]), "'argv' is missing"),
        (lambda d: d.pop("processes"), "'processes' is missing"),
        (lambda d: d.update(surprise=1), "unexpected keyword argument 'surprise'"),
    ],
)
def test_a_state_file_edited_by_hand_is_named_with_what_is_wrong(tmp_path, edit, says):
    import json

    path = state_path(tmp_path, "a")
    LabState(name="a", path=path).save()
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(LabError, match=f"cannot read the lab state file {path}: .*{says}.*remove it after"):
        find("a", tmp_path)


def test_lab_down_without_root_says_so_and_removes_nothing(tmp_path, monkeypatch):
    from partition.lab import down

    state = LabState(name="wifi-edge", path=state_path(tmp_path, "wifi-edge"))
    state.save()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as after `sudo lab up`, a plain `lab down`
    with pytest.raises(LabError, match="lab down needs root, as lab up did: wifi-edge has processes"):
        down(None, tmp_path)
    assert state.path.exists()


def test_hints_carry_a_state_dir_other_than_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("PARTITION_LAB_STATE_DIR", raising=False)
    assert lab_command(DEFAULT_STATE_DIR, "down --name a") == "partition lab down --name a"
    assert lab_command(tmp_path, "down --name a") == f"partition lab --state-dir {tmp_path} down --name a"


def test_children_find_the_commands_installed_next_to_this_interpreter(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert child_env()["PATH"].split(os.pathsep) == [os.path.dirname(sys.executable), "/usr/bin", "/bin"]


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
def test_ready_timeout_must_be_positive(seconds, capsys):
    parser = argparse.ArgumentParser()
    lab_cli.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["up", "--config", "x.toml", "--ready-timeout", seconds])
    assert "--ready-timeout: must be more than 0 seconds" in capsys.readouterr().err
