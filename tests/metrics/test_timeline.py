import pytest

from partition.metrics.timeline import plot_timeline
from tests.metrics.test_spans import chain

pytest.importorskip("matplotlib")


def test_timeline_draws_every_nonzero_phase(tmp_path):
    path = tmp_path / "timeline.png"
    counts = plot_timeline(chain(), path)
    # 4 steps x 3 hops; hop 0 has no link phases (input from the client).
    assert counts == {"encode": 8, "wire": 8, "decode": 8, "queue": 12, "compute": 12}
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_timeline_of_an_unknown_session(tmp_path):
    with pytest.raises(ValueError, match="no spans of session 'nope'"):
        plot_timeline(chain(), tmp_path / "t.png", session="nope")
