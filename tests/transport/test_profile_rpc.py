"""Stage.Profile on a real worker (profile): a caller that goes away stops the measuring, so the worker's
compute lane, which every load and step needs, is not held for the rest of a profile nobody waits for."""

import asyncio

import grpc

from partition.transport.channels import TransportConfig
from partition.transport.client import Chain, StageCallError, StageClient
from partition.transport.generated import measure_pb2
from partition.transport.local import spawn_worker
from partition.types import Segment


def test_a_profile_whose_caller_went_away_stops_and_leaves_the_lane_to_the_next_call(models_dir, tmp_path):
    cache = tmp_path / "cache"
    worker = spawn_worker(
        "profiled",
        extra_args=("--models-dir", str(models_dir), "--threads", "1"),
        env={"PARTITION_CACHE_DIR": str(cache)},
    )
    try:

        async def run():
            client = StageClient(worker.address, TransportConfig())
            # thousands of samples of 40 ms idle each: minutes, were it measured to the end
            endless = measure_pb2.ProfileRequest(
                model="tiny", repeats=5000, refresh=True, prefill_lengths=[16], context_lengths=[16]
            )
            try:
                await client.profile(endless, timeout_s=3.0)
            except StageCallError as error:
                assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
            else:
                raise AssertionError("a profile of minutes answered within its 3 s deadline")
            finally:
                await client.close()
            chain = Chain([worker.address], TransportConfig())
            try:  # waits for the lane: for the profile to stop
                return await chain.load("plan", 1, "tiny", [Segment(0, 5)], ["raw"])
            finally:
                await chain.close()

        replies = asyncio.run(asyncio.wait_for(run(), timeout=120))
        assert replies[0].kv_slots > 0
        # a profile measured to its end is stored in the worker's cache; a stopped one is not
        assert not list((cache / "profiles").glob("*.json"))
    finally:
        worker.stop()
