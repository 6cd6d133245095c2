"""Metrics written as JSON for other programs: undefined values are null, never NaN."""

import json
import math

import pytest

from partition.metrics import json_out


def test_undefined_metrics_are_null_at_any_depth_and_the_rest_unchanged():
    report = {"tpot_s": math.nan, "tbt_s": [0.1, math.inf], "hops": ({"p99": -math.inf, "codec": "raw"},)}
    text = json_out.dumps(report, indent=2)
    assert json.loads(text) == {"tpot_s": None, "tbt_s": [0.1, None], "hops": [{"p99": None, "codec": "raw"}]}
    assert json_out.dumps({"ttft_s": 0.25, "n": 3, "ok": True}) == json.dumps(
        {"ttft_s": 0.25, "n": 3, "ok": True}
    )


def test_what_json_cannot_hold_still_fails_loudly():
    with pytest.raises(TypeError):
        json_out.dumps({"when": object()})
    assert json_out.dumps({"when": object()}, default=lambda _: "x") == '{"when": "x"}'
