"""`partition bench` writes its outputs after the whole run: a folder that does not exist yet is made,
so the measurements are not lost at the end."""

import argparse

import pytest

from partition.cli.bench import write_span_outputs
from partition.metrics.spanlog import read_spans
from tests.metrics.test_spans import chain


def test_spans_and_plot_go_into_folders_made_for_them(tmp_path):
    pytest.importorskip("matplotlib")
    spans, plot = tmp_path / "new" / "spans.msgpack", tmp_path / "not" / "yet" / "t.png"
    write_span_outputs(argparse.Namespace(spans=spans, plot=plot), chain())
    assert len(list(read_spans(spans))) == len(chain())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
