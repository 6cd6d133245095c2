"""The cost model on a chain small enough to add up by hand."""

import pytest

from partition.plan.cluster import Cluster, Device
from partition.plan.codecs import DEFAULT_CODECS, CodecSpec
from partition.plan.costmodel import HOP_SOFTWARE_S, best_hop, evaluate
from partition.types import (
    DeviceIdentity,
    DeviceProfile,
    Fit,
    LayerCost,
    LinkProfile,
    ModelRef,
    Segment,
    Stage,
    Workload,
)

MODEL = ModelRef("m", "d", 2)  # embed, block.0, block.1, head
RAW = (CodecSpec("raw", 4.0, 0.0, 0.0, True),)
SW = HOP_SOFTWARE_S  # every hop's message handling, on top of the link


def profile(name: str, block_prefill_per_token: float, block_step: float) -> DeviceProfile:
    return DeviceProfile(
        DeviceIdentity(name, "cpu", 1, None, 10**9),
        MODEL,
        "float32",
        embed=LayerCost("embed", Fit(0.001, 0.0), Fit(0.001, 0.0), 100, 0, 1000),
        block=LayerCost("block", Fit(0.0, block_prefill_per_token), Fit(block_step, 0.0), 100, 10, 1000),
        head=LayerCost("head", Fit(0.005, 0.0), Fit(0.005, 0.0), 100, 0, 4),
    )


@pytest.fixture
def cluster():
    devices = (
        Device("edge", "edge", profile("edge", 0.01, 0.02), 10**9),
        Device("srv", "server", profile("srv", 0.001, 0.002), 10**9),
    )
    links = (LinkProfile("edge", "srv", 0.01, 1e6), LinkProfile("srv", "edge", 0.01, 1e6))
    return Cluster(devices, links)


CHAIN = (
    Stage("edge", Segment(0, 1), "raw"),
    Stage("srv", Segment(1, 3), "raw"),
    Stage("edge", Segment(3, 4), "raw"),
)


def test_one_session_by_hand(cluster):
    pred = evaluate(cluster, CHAIN, Workload(prompt_tokens=10, new_tokens=5), RAW)
    # prefill: embed 1 ms, 10 x 1000 B over 1 MB/s + 10 ms, 2 blocks x 10 tokens x 1 ms, the same hop back, head 5 ms
    assert pred.ttft_s == pytest.approx(0.001 + 0.020 + 0.020 + 0.020 + 0.005 + 2 * SW)
    # a step: 1 ms, 1000 B + 10 ms, 2 x 2 ms, 1000 B + 10 ms, 5 ms
    assert pred.tpot_s == pytest.approx(0.001 + 0.011 + 0.004 + 0.011 + 0.005 + 2 * SW)
    assert pred.total_s == pytest.approx(pred.ttft_s + 4 * pred.tpot_s)
    assert pred.round_s == pytest.approx(pred.tpot_s) and pred.objective_s == pred.total_s
    assert [s.memory_bytes for s in pred.stages] == [100, 2 * (100 + 10 * 15), 100]
    assert [(h.src, h.dst, h.cut, h.prefill_bytes, h.decode_bytes) for h in pred.links] == [
        ("edge", "srv", 1, 10000, 1000),
        ("srv", "edge", 3, 10000, 1000),
    ]


def test_sessions_batch_for_latency_and_pipeline_for_throughput(cluster):
    pred = evaluate(cluster, CHAIN, Workload(10, 5, sessions=2, objective="throughput"), RAW)
    # S = 2 prompts in one prefill batch: blocks twice the tokens; hops twice the bytes
    assert pred.ttft_s == pytest.approx(0.001 + 0.030 + 2 * 0.020 + 0.030 + 0.005 + 2 * SW)
    # batched step: each block one step + one extra token at the prefill rate (2 ms + 1 ms)
    assert pred.tpot_s == pytest.approx(0.001 + 0.012 + 2 * 0.003 + 0.012 + 0.005 + 2 * SW)
    # micro-batches: chain 32 ms + (S - 1) x the busiest resource (the edge: embed + head = 6 ms)
    assert pred.round_s == pytest.approx(0.032 + 2 * SW + 0.006)
    assert pred.tokens_per_s == pytest.approx(2 / pred.round_s) and pred.objective_s == pred.round_s


def test_token_ids_go_raw_and_logits_as_the_top_k_whatever_the_codecs(cluster):
    chain = (Stage("srv", Segment(0, 4), "raw"),)
    pred = evaluate(cluster, chain, Workload(10, 5), DEFAULT_CODECS[3:4])
    # in: 10 prompt ids then one id per step; back: the last position's top 64 logits (id + fp32 each)
    assert [(h.cut, h.codec, h.prefill_bytes, h.decode_bytes) for h in pred.links] == [
        (0, "raw", 40, 4),
        (4, "top-k", 512, 512),
    ]


def test_a_remote_head_pays_its_top_k_encode_and_the_edges_decode_on_the_way_back(cluster):
    """The top-K logits are picked on the head's server and the logits rebuilt on the edge, every token
    and once for the prompt: the return hop adds the server's encode and the edge's decode. With the
    head on the edge nothing crosses after it, and nothing is added."""
    from dataclasses import replace

    # (encode, decode) per device: only the server's encode and the edge's decode may count
    costs = {"srv": (0.003, 0.5), "edge": (0.5, 0.0007)}
    devices = tuple(
        replace(
            d, profile=replace(d.profile, top_k_encode_s=costs[d.name][0], top_k_decode_s=costs[d.name][1])
        )
        for d in cluster.devices
    )
    measured = Cluster(devices, cluster.links)
    w = Workload(10, 5)
    remote_head = (Stage("edge", Segment(0, 1), "raw"), Stage("srv", Segment(1, 4), "raw"))
    before, after = (evaluate(c, remote_head, w, RAW) for c in (cluster, measured))
    back_before, back_after = before.links[-1], after.links[-1]
    assert back_after.cut == 4 and (back_after.src, back_after.dst) == ("srv", "edge")
    assert back_after.decode_s - back_before.decode_s == pytest.approx(0.0037)
    assert back_after.prefill_s - back_before.prefill_s == pytest.approx(0.0037)
    assert after.tpot_s - before.tpot_s == pytest.approx(0.0037)
    assert after.ttft_s - before.ttft_s == pytest.approx(0.0037)
    # the solver's hop table agrees with evaluate
    link = measured.link("srv", "edge")
    srv, edge = measured.device("srv").profile, measured.device("edge").profile
    assert best_hop(link, 4, 4, 512, RAW, w, srv, edge).decode_s == pytest.approx(back_after.decode_s)
    local_head = (Stage("edge", Segment(0, 1), "raw"), Stage("srv", Segment(1, 3), "raw"), CHAIN[2])
    assert evaluate(measured, local_head, w, RAW).tpot_s == pytest.approx(
        evaluate(cluster, local_head, w, RAW).tpot_s
    )
    # S sessions send S rows of top-K logits per step (and one per prompt): each row is picked and
    # rebuilt on its own, so the hop back adds S times the cost
    w3 = Workload(10, 5, sessions=3)
    before3, after3 = (evaluate(c, remote_head, w3, RAW) for c in (cluster, measured))
    assert after3.links[-1].decode_s - before3.links[-1].decode_s == pytest.approx(3 * 0.0037)
    assert after3.ttft_s - before3.ttft_s == pytest.approx(3 * 0.0037)


@pytest.mark.parametrize(("bandwidth_mbps", "expected"), [(10, "int8-zstd"), (100_000, "raw")])
def test_codec_per_hop_follows_the_link(bandwidth_mbps, expected):
    link = LinkProfile("a", "b", 0.001, bandwidth_mbps * 1e6 / 8)
    assert best_hop(link, 5, 32, 2304, DEFAULT_CODECS, Workload(128, 64)).codec == expected
