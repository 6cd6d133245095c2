"""Real profiles of this machine and the plans they lead to (the issue's must-be-true cases)."""

from dataclasses import replace

import pytest

from partition.model import load_segment
from partition.plan import make_plan
from partition.plan.cluster import GB, Cluster, Device
from partition.plan.costmodel import unit_memory_bytes
from partition.plan.synthetic import link_pair
from partition.types import TOP_K_LOGITS_BYTES, Pinning, Segment, Workload

W = Workload(prompt_tokens=64, new_tokens=32)


def test_profile_records_the_model_as_loaded(server_profile, smollm2):
    spec = smollm2.spec
    p = server_profile
    assert p.model.digest == smollm2.digest and p.model.n_blocks == spec.n_blocks == 30
    assert p.device.threads == 1 and p.device.name == "server" and p.dtype == "float32"
    # fp32 parameters: embedding 49152 x 576; a block's attention + MLP + 2 norms
    assert p.embed.weight_bytes == 4 * spec.vocab_size * spec.hidden_size
    block_params = 2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576
    assert p.block.weight_bytes == 4 * block_params
    assert p.block.kv_bytes_per_token == 2 * 3 * 64 * 4 and p.embed.kv_bytes_per_token == 0
    assert (
        p.block.activation_bytes_per_token == 4 * 576
        and p.head.activation_bytes_per_token == TOP_K_LOGITS_BYTES
    )
    for cost in (p.embed, p.block, p.head):
        assert cost.prefill.at(32) > 0 and cost.decode.at(64) > 0
    assert p.block.prefill.at(32) > p.block.decode.at(32)  # 32 tokens cost more than one
    # the top-64 of 49152 logits and the logits rebuilt from them: measured, and far below the head
    assert 0 < p.top_k_encode_s < p.head.decode.at(64) and 0 < p.top_k_decode_s < p.head.decode.at(64)
    # tied embeddings: the embedding and the head count the same matrix, which the whole model holds once
    units = p.embed.weight_bytes + spec.n_blocks * p.block.weight_bytes + p.head.weight_bytes
    whole = load_segment(smollm2, Segment.whole(spec.n_blocks)).weight_bytes()
    assert p.tied_weight_bytes == units - whole == 4 * spec.vocab_size * spec.hidden_size
    assert (p.prefill_tokens_max, p.context_tokens_max) == (32, 64)  # SETTINGS' longest, as timed


def test_a_second_request_comes_from_the_cache(server_profile, profile_dir, monkeypatch):
    import partition.profile as profile_package
    from tests.profile.conftest import SETTINGS

    def measure_again(*args, **kwargs):
        raise AssertionError("profiled again instead of using the cache")

    monkeypatch.setattr(profile_package, "profile_model", measure_again)
    monkeypatch.setattr(profile_package, "memory_available_bytes", lambda: GB)  # a 1 GB limit since
    again = profile_package.profile_device(
        "smollm2-135m", SETTINGS, threads=1, name="server", cache_dir=profile_dir
    )
    assert again.device.memory_bytes == GB  # what the device offers now, not when it was timed
    assert replace(again, device=server_profile.device) == server_profile


def test_a_profile_measured_by_an_older_method_is_measured_again(server_profile, tmp_path, monkeypatch):
    """A cached profile whose samples were taken another way (profiler.METHOD) is not served."""
    import partition.profile as profile_package
    from partition.profile.cache import cache_key, store
    from partition.profile.device import cpu_model, cpu_quota_cores
    from tests.profile.conftest import SETTINGS

    identity = {"name": "server", "cpu_model": cpu_model(), "cuda_device": None}
    digest = server_profile.model.digest
    older = cache_key(digest, identity, "float32", 1, cpu_quota_cores(), SETTINGS, profile_package.METHOD - 1)
    current = cache_key(digest, identity, "float32", 1, cpu_quota_cores(), SETTINGS, profile_package.METHOD)
    assert older != current
    store(tmp_path, older, server_profile)
    measured = []

    def measure_again(*args, **kwargs):
        measured.append(kwargs["name"])
        return server_profile

    monkeypatch.setattr(profile_package, "profile_model", measure_again)
    profile_package.profile_device("smollm2-135m", SETTINGS, threads=1, name="server", cache_dir=tmp_path)
    assert measured == ["server"] and (tmp_path / f"{current}.json").is_file()


def test_the_quota_makes_the_edge_slower(server_profile, edge_profile):
    edge, server = edge_profile.profile, server_profile
    assert edge.block.decode.at(64) > 1.5 * server.block.decode.at(64), edge_profile.emulated
    assert edge.block.prefill.at(32) > 1.5 * server.block.prefill.at(32), edge_profile.emulated


def two_device_cluster(edge, server, mbps: float, latency_ms: float, server_gb: float = 4.0) -> Cluster:
    devices = (Device("edge", "edge", edge, 4 * GB), Device("server", "server", server, int(server_gb * GB)))
    return Cluster(devices, link_pair("edge", "server", mbps, latency_ms))


def server_blocks(plan) -> int:
    return sum(len(s.segment.blocks(plan.model.n_blocks)) for s in plan.stages if s.device == "server")


def test_slow_edge_and_fast_link_move_the_blocks_to_the_server(server_profile, edge_profile):
    plan = make_plan(two_device_cluster(edge_profile.profile, server_profile, 1000, 0.2), W)
    assert server_blocks(plan) == 30, plan.stages
    assert [s.device for s in plan.stages] == ["edge", "server"]  # embed stays; the head returns top logits


def test_a_device_with_room_for_the_whole_model_once_gets_it_whole(server_profile, edge_profile):
    """A segment holding the embedding and the tied head keeps one copy of their matrix: a device with
    room for the model as loaded (not for the units' sum, which counts that matrix twice) runs it whole."""
    edge = edge_profile.profile
    units = sum(unit_memory_bytes(edge.unit_cost(u), W) for u in range(edge.model.n_blocks + 2))
    room = units - edge.tied_weight_bytes + 10 * 2**20
    assert room < units
    cluster = two_device_cluster(edge, server_profile, 0.05, 200).replace_memory("edge", room)
    plan = make_plan(cluster, W)  # a very slow link: the best plan is on the edge alone
    assert [s.device for s in plan.stages] == ["edge"], plan.stages
    assert plan.predicted.stages[0].memory_bytes == units - edge.tied_weight_bytes
    # the same on a server, when nothing is pinned to a tiny edge
    cluster = two_device_cluster(edge, server_profile, 1000, 0.2).replace_memory("server", room)
    plan = make_plan(cluster.replace_memory("edge", 2**20), W, pin=Pinning(embed=False, head=False))
    assert [(s.device, s.segment) for s in plan.stages] == [("server", Segment.whole(edge.model.n_blocks))]


def test_an_edge_holding_both_ends_counts_their_tied_matrix_once(server_profile, edge_profile):
    """The edge's front and tail pieces run in one process, which deploy lets share the tied matrix: an
    edge with room for the embedding and the head as loaded (one matrix, not two) keeps both ends."""
    from partition.plan.validate import device_memory

    edge = edge_profile.profile
    n = edge.model.n_blocks + 2
    ends = unit_memory_bytes(edge.unit_cost(0), W) + unit_memory_bytes(edge.unit_cost(n - 1), W)
    room = ends - edge.tied_weight_bytes + 2**20
    assert room < ends
    cluster = two_device_cluster(edge, server_profile, 1000, 0.2).replace_memory("edge", room)
    plan = make_plan(cluster, W, pin=Pinning(embed=True, head=True))
    assert [(s.device, s.segment) for s in plan.stages] == [
        ("edge", Segment(0, 1)),
        ("server", Segment(1, n - 1)),
        ("edge", Segment(n - 1, n)),
    ]
    weights, _ = device_memory(cluster, plan.stages, W)["edge"]
    assert weights == edge.embed.weight_bytes + edge.head.weight_bytes - edge.tied_weight_bytes


def test_a_very_slow_link_keeps_the_blocks_on_the_edge(server_profile, edge_profile):
    plan = make_plan(two_device_cluster(edge_profile.profile, server_profile, 0.05, 200), W)
    assert server_blocks(plan) == 0 and [s.device for s in plan.stages] == ["edge"]
    assert plan.unused == ("server",)


@pytest.mark.parametrize("memory_gb", [[0.5, 0.25, 0.12, 0.06]])
def test_less_server_memory_means_a_smaller_share(server_profile, edge_profile, memory_gb):
    shares = [
        server_blocks(
            make_plan(
                two_device_cluster(edge_profile.profile, server_profile, 1000, 0.2, gb),
                W,
                pin=Pinning(head=True),
            )
        )
        for gb in memory_gb
    ]
    assert shares[0] == 30 and shares == sorted(shares, reverse=True) and len(set(shares)) == len(shares), (
        shares
    )
