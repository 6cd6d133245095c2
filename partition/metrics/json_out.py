"""JSON for other programs (metrics): `serve --json`, `generate --json`, `bench --json`, the HTTP API.

A metric a run does not define (the TPOT of a one-token answer, a percentile of no gaps) is NaN in
Python, and `json.dumps` writes it as `NaN`, which is not JSON: JavaScript's JSON.parse, Go and other
strict parsers reject the whole document. Written here as null instead.
"""

from __future__ import annotations

import json
import math


def dumps(value, **kwargs) -> str:
    """`json.dumps(value, **kwargs)` with every NaN or infinite float written as null."""
    return json.dumps(_finite(value), allow_nan=False, **kwargs)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
