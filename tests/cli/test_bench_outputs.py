"""`partition bench` writes its outputs after the whole run: a folder that does not exist yet is made,
and one output that cannot be written loses none of the others."""

import argparse
import json
from pathlib import Path

import pytest

from partition.cli.bench import write_outputs
from partition.metrics.spanlog import read_spans
from tests.metrics.test_spans import chain


def test_outputs_go_into_folders_made_for_them(tmp_path):
    pytest.importorskip("matplotlib")
    report = tmp_path / "a" / "bench.json"
    spans, plot = tmp_path / "new" / "spans.msgpack", tmp_path / "not" / "yet" / "t.png"
    written = write_outputs(argparse.Namespace(json_out=report, spans=spans, plot=plot), {"n": 1}, chain())
    assert written == 0 and json.loads(report.read_text()) == {"n": 1}
    assert len(list(read_spans(spans))) == len(chain())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_output_that_cannot_be_written_is_named_and_the_others_are_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    report = Path("/proc/partition-no-such-folder/bench.json")  # /proc takes no folders, even from root
    spans, plot = tmp_path / "spans.msgpack", tmp_path / "t.svg"
    args = argparse.Namespace(json_out=report, spans=spans, plot=plot)
    assert write_outputs(args, {"n": 1}, chain()) == 2
    assert f"partition bench: cannot write {report}: " in capsys.readouterr().err
    assert len(list(read_spans(spans))) == len(chain()) and b"<svg" in plot.read_bytes()
