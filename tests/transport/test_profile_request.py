"""ProfileSettings through a ProfileRequest's bytes and back: what `profile --cluster` asks a worker for
is what the worker measures (and files its profile under)."""

from dataclasses import fields

import pytest

from partition.errors import ConfigError
from partition.profile import ProfileSettings
from partition.transport.generated import measure_pb2
from partition.transport.profile_request import profile_request, requested_settings


def test_every_setting_reaches_the_worker_as_given_falsy_ones_too():
    chosen = ProfileSettings(
        prefill_lengths=(3, 5), context_lengths=(7,), repeats=2, warmup=0, min_time_s=0.25, idle_s=0.0,
        block_span=4,
    )  # fmt: skip
    defaults = ProfileSettings()
    # none left at its default, so a setting with no field on the wire would come back changed
    assert [
        f.name for f in fields(ProfileSettings) if getattr(chosen, f.name) == getattr(defaults, f.name)
    ] == []
    wire = profile_request("smollm2-135m", chosen, refresh=True).SerializeToString()
    request = measure_pb2.ProfileRequest.FromString(wire)
    assert requested_settings(request) == chosen
    assert request.model == "smollm2-135m" and request.refresh


def test_a_request_that_sets_nothing_is_measured_with_the_profilers_defaults():
    assert requested_settings(profile_request("smollm2-135m", None)) == ProfileSettings()


def test_a_setting_the_profiler_refuses_is_named():
    with pytest.raises(ConfigError, match="block_span must be >= 1, got 0"):
        requested_settings(measure_pb2.ProfileRequest(model="smollm2-135m", block_span=0))
