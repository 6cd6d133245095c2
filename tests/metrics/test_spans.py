from dataclasses import replace

import msgpack
import pytest

from partition.errors import SpanLogError
from partition.metrics import HopSpan, SpanLogWriter, link_summaries, read_spans, stage_summaries, write_spans
from partition.metrics.spans import SPAN_FIELDS


def span(token: int, hop: int, src: str, dst: str, wire: float, compute: float, n_tokens: int = 1) -> HopSpan:
    return HopSpan(
        session="s1",
        token=token,
        hop=hop,
        src=src,
        dst=dst,
        codec="int8" if src else "",
        n_tokens=n_tokens,
        payload_bytes=612 * n_tokens if src else 0,
        start_s=0.01 * token + 0.001 * hop,
        encode_s=1e-5 if src else 0.0,
        wire_s=wire,
        decode_s=2e-5 if src else 0.0,
        queue_s=1e-4,
        compute_s=compute,
    )


def chain() -> list[HopSpan]:
    """Prefill (token 0, 8 prompt tokens) then 3 decode steps through edge -> a -> edge."""
    spans = []
    for token in range(4):
        n = 8 if token == 0 else 1
        spans += [
            span(token, 0, "", "edge", 0.0, 0.002, n),
            span(token, 1, "edge", "a", 0.010 + 0.001 * token, 0.005, n),
            span(token, 2, "a", "edge", 0.011, 0.001, n),
        ]
    return spans


def test_span_times_add_up():
    s = span(1, 1, "edge", "a", 0.01, 0.005)
    assert s.link_s == pytest.approx(1e-5 + 0.01 + 2e-5)
    assert s.total_s == pytest.approx(s.link_s + 1e-4 + 0.005)


def test_link_summaries_by_hand():
    links = link_summaries(chain())
    assert [(link.src, link.dst) for link in links] == [("edge", "a"), ("a", "edge")]
    first = links[0]
    assert first.codec == "int8" and first.n_messages == 3  # decode steps only
    # wires .011, .012, .013 (+ 3e-5 encode/decode): median .012
    assert first.latency_p50_s == pytest.approx(0.012 + 3e-5)
    assert first.wire_p50_s == pytest.approx(0.012)
    assert first.bytes_per_token == 612
    with_prefill = link_summaries(chain(), decode_only=False)[0]
    assert with_prefill.n_messages == 4 and with_prefill.bytes_per_token == 612


def test_stage_summaries_keep_the_edge_twice():
    stages = stage_summaries(chain())
    assert [(s.hop, s.device) for s in stages] == [(0, "edge"), (1, "a"), (2, "edge")]
    assert stages[1].compute_p50_s == pytest.approx(0.005) and stages[1].n_messages == 3


def test_a_stages_batch_mean_is_over_its_decode_steps():
    spans = [replace(s, batch=s.token + 1) if s.dst == "a" else s for s in chain()]  # tokens 0..3 at "a"
    stages = stage_summaries(spans)
    assert [s.batch_mean for s in stages] == [1.0, pytest.approx((2 + 3 + 4) / 3), 1.0]  # prefill left out


def test_an_end_that_computes_nothing_is_not_a_stage():
    # the head on server a: the result comes back to an edge that only samples
    spans = [span(t, h, src, dst, 0.01, compute) for t in range(3) for h, src, dst, compute in
             [(0, "", "edge", 0.001), (1, "edge", "a", 0.02), (2, "a", "edge", 0.0)]]  # fmt: skip
    assert [(s.hop, s.device) for s in stage_summaries(spans)] == [(0, "edge"), (1, "a")]
    assert [(link.src, link.dst) for link in link_summaries(spans)] == [("edge", "a"), ("a", "edge")]


def test_span_log_round_trip(tmp_path):
    path = tmp_path / "spans.msgpack"
    assert write_spans(path, chain()) == 12
    assert read_spans(path) == chain()
    # Compact: positional records, well under 150 bytes a span with these names.
    assert path.stat().st_size < 12 * 150


def test_span_log_written_incrementally(tmp_path):
    path = tmp_path / "spans.msgpack"
    with SpanLogWriter(path) as writer:
        writer.write(chain()[0])
        writer.flush()
        assert read_spans(path) == chain()[:1]  # readable while still open
        writer.write_all(chain()[1:3])
    assert read_spans(path) == chain()[:3]


def test_truncated_log_is_reported_or_kept(tmp_path):
    path = tmp_path / "spans.msgpack"
    write_spans(path, chain())
    path.write_bytes(path.read_bytes()[:-5])  # a crash in the middle of the last record
    with pytest.raises(SpanLogError, match="truncated after 11 complete spans"):
        read_spans(path)
    assert read_spans(path, allow_truncated_tail=True) == chain()[:11]


def test_not_a_span_log(tmp_path):
    path = tmp_path / "other.msgpack"
    path.write_bytes(msgpack.packb({"hello": 1}))
    with pytest.raises(SpanLogError, match="not a partition span log"):
        read_spans(path)
    path.write_bytes(b"")
    with pytest.raises(SpanLogError, match="not a partition span log"):
        read_spans(path)
    path.write_bytes(b"\xc1\xc1\xc1")  # 0xc1 is never used in msgpack
    with pytest.raises(SpanLogError, match="corrupt"):
        read_spans(path)


def test_other_version_and_bad_records(tmp_path):
    path = tmp_path / "spans.msgpack"
    header = {"format": "partition-spans", "version": 2, "fields": list(SPAN_FIELDS)}
    path.write_bytes(msgpack.packb(header))
    with pytest.raises(SpanLogError, match="version 2"):
        read_spans(path)
    header["version"] = 1
    record = [getattr(chain()[1], name) for name in SPAN_FIELDS]
    bad = list(record)
    bad[SPAN_FIELDS.index("wire_s")] = "fast"
    path.write_bytes(msgpack.packb(header) + msgpack.packb(record) + msgpack.packb(bad))
    with pytest.raises(SpanLogError, match="span 1 has wire_s='fast'"):
        read_spans(path)
    path.write_bytes(msgpack.packb(header) + msgpack.packb(record[:-1]))
    with pytest.raises(SpanLogError, match=f"span 0 is not a record of {len(SPAN_FIELDS)} values"):
        read_spans(path)
    header["fields"] = [["t0"], *SPAN_FIELDS]  # a name that is no string
    path.write_bytes(msgpack.packb(header) + msgpack.packb([0, *record]))
    with pytest.raises(SpanLogError, match="the header's fields are not a list of names"):
        read_spans(path)


def test_extra_fields_from_a_newer_writer_are_ignored(tmp_path):
    path = tmp_path / "spans.msgpack"
    header = {"format": "partition-spans", "version": 1, "fields": ["gpu_s", *SPAN_FIELDS]}
    record = [0.5, *(getattr(chain()[1], name) for name in SPAN_FIELDS)]
    path.write_bytes(msgpack.packb(header) + msgpack.packb(record))
    assert read_spans(path) == [chain()[1]]


def test_a_log_written_before_batch_was_recorded_reads_as_every_step_alone(tmp_path):
    path = tmp_path / "spans.msgpack"
    older = [name for name in SPAN_FIELDS if name != "batch"]
    span = replace(chain()[1], batch=3)
    header = {"format": "partition-spans", "version": 1, "fields": older}
    path.write_bytes(msgpack.packb(header) + msgpack.packb([getattr(span, name) for name in older]))
    assert read_spans(path) == [replace(span, batch=1)]


def test_the_time_no_span_covers_is_the_coordinators_per_token_work():
    from partition.metrics.spans import outside_spans_p50_s

    def bare(session: str, token: int, hop: int, start: float, compute: float) -> HopSpan:
        return HopSpan(session, token, hop, "edge" if hop else "", "a" if hop else "edge", "raw" if hop else "",
                       1, 4, start, 0.0, 0.0, 0.0, 0.0, compute)  # fmt: skip

    # steps every 20 ms; their spans cover 2 + 15 ms, or 2 + 16 ms in session s2: 3 or 2 ms uncovered
    spans = []
    for session, remote in (("s1", 0.015), ("s2", 0.016)):
        for token in range(4):
            start = 0.02 * token
            spans += [bare(session, token, 0, start, 0.002), bare(session, token, 1, start + 0.002, remote)]
    # decode steps followed by another: tokens 1 and 2 of each session (the prompt's step 0 is none)
    assert outside_spans_p50_s(spans) == pytest.approx(0.0025)
    assert outside_spans_p50_s([s for s in spans if s.token == 0]) is None
