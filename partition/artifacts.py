"""JSON forms of the profile and plan artifacts (profile -> plan -> deploy), with schema versions.

Every artifact is one JSON object `{"schema": NAME, "schema_version": N, ...fields}` whose fields mirror
the frozen dataclasses in `partition/types.py`, with two flattenings the plan format fixes: a `Segment`
field becomes `start`/`end` in its parent, and a model is `{name, digest, n_blocks, n_units}`.
Reading is strict: a missing, extra or mistyped field is a `ConfigError` that names its path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from partition.errors import ConfigError
from partition.types import (
    EPOCH_MAX,
    WEIGHT_DTYPES,
    DeviceProfile,
    ModelRef,
    Plan,
    Segment,
    check_device_name,
)

PROFILE_SCHEMA = ("partition/device-profile", 1)
PLAN_SCHEMA = ("partition/plan", 1)

T = TypeVar("T")


def profile_to_json(profile: DeviceProfile) -> str:
    return _dump(profile, PROFILE_SCHEMA)


def profile_from_json(text: str, source: str = "device profile") -> DeviceProfile:
    hint = "profile the device again with `partition profile`"
    profile = _load(text, DeviceProfile, PROFILE_SCHEMA, source, hint=hint)
    problems = _profile_problems(profile)
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}; {hint}")
    return profile


def _profile_problems(profile: DeviceProfile) -> list[str]:
    """What no profiler writes (it fits times >= 0 and counts bytes): a hand-edited or damaged profile
    that would plan silently wrong, e.g. a negative time that makes a slow device look free."""
    numbers = {"top_k_encode_s": profile.top_k_encode_s, "top_k_decode_s": profile.top_k_decode_s}
    numbers["tied_weight_bytes"] = profile.tied_weight_bytes
    numbers["prefill_tokens_max"] = profile.prefill_tokens_max
    numbers["context_tokens_max"] = profile.context_tokens_max
    problems = []
    for kind in ("embed", "block", "head"):
        cost = getattr(profile, kind)
        if cost.kind != kind:
            problems.append(f"{kind}.kind is {cost.kind!r}, not {kind!r}")
        for phase in ("prefill", "decode"):
            fit = getattr(cost, phase)
            numbers |= {f"{kind}.{phase}.{c}": getattr(fit, c) for c in ("c0", "c1", "c2")}
        for field in ("weight_bytes", "kv_bytes_per_token", "activation_bytes_per_token"):
            numbers[f"{kind}.{field}"] = getattr(cost, field)
        numbers |= {
            f"{kind}.prefill_spread": cost.prefill_spread,
            f"{kind}.decode_spread": cost.decode_spread,
        }
    problems += [f"{name} must be >= 0, got {value}" for name, value in numbers.items() if not value >= 0]
    if profile.dtype not in WEIGHT_DTYPES:
        problems.append(f"dtype {profile.dtype!r} is not one of {', '.join(WEIGHT_DTYPES)}")
    if profile.device.threads < 1:  # a plan records them as the edge's threads, where 0 means unknown
        problems.append(f"device.threads must be >= 1, got {profile.device.threads}")
    if profile.device.memory_bytes < 0:
        problems.append(f"device.memory_bytes must be >= 0, got {profile.device.memory_bytes}")
    shared = min(profile.embed.weight_bytes, profile.head.weight_bytes)
    if profile.tied_weight_bytes > shared:
        problems.append(
            f"tied_weight_bytes {profile.tied_weight_bytes} is more than the embedding and head hold ({shared})"
        )
    return problems


def plan_to_json(plan: Plan) -> str:
    return _dump(plan, PLAN_SCHEMA)


def plan_from_json(text: str, source: str = "plan") -> Plan:
    hint = "make it again with `partition plan`"
    plan = _load(text, Plan, PLAN_SCHEMA, source, hint=hint)
    # as `plan --epoch` does: workers refuse epoch 0, and the wire (uint64) carries no other number
    if not 1 <= plan.epoch <= EPOCH_MAX:
        raise ConfigError(f"{source}: epoch must be in [1, {EPOCH_MAX}], got {plan.epoch}; {hint}")
    try:  # device names become file names where the plan is served
        check_device_name(plan.edge, f"{source}: edge")
        for index, stage in enumerate(plan.stages):
            check_device_name(stage.device, f"{source}: stages[{index}].device")
    except ConfigError as error:
        raise ConfigError(f"{error}; {hint}") from None
    # what every worker would refuse at deploy, one at a time: said here, with the file's name
    from partition.plan.codecs import DEFAULT_CODECS, codec_names

    if not plan.plan_id.strip():
        raise ConfigError(f"{source}: plan_id is empty; {hint}")
    known = codec_names(DEFAULT_CODECS)
    for index, stage in enumerate(plan.stages):
        if stage.codec_out not in known:
            raise ConfigError(
                f"{source}: stages[{index}].codec_out {stage.codec_out!r} is not a codec the workers run "
                f"({', '.join(known)}); {hint}"
            )
    return plan


def save_profile(profile: DeviceProfile, path: Path) -> None:
    write_atomically(Path(path), profile_to_json(profile))


def load_profile(path: Path) -> DeviceProfile:
    return profile_from_json(read_text(Path(path), "file"), str(path))


def save_plan(plan: Plan, path: Path) -> None:
    write_atomically(Path(path), plan_to_json(plan))


def load_plan(path: Path) -> Plan:
    return plan_from_json(read_text(Path(path), "file"), str(path))


# Bytes a text artifact may hold (plans, profiles, cluster files, codec tables, lab configs): the
# largest plans, of a model of hundreds of layers over dozens of devices, are some megabytes.
MAX_TEXT_BYTES = 64 << 20


def read_text(path: Path, kind: str, advice: str = "") -> str:
    """A text file a user gives (`kind`: "cluster file", "lab config", ...), or a ConfigError naming it:
    missing, a folder, unreadable, over MAX_TEXT_BYTES (/dev/zero would fill the memory), or not UTF-8
    (a binary, or UTF-16 as some shells write); `advice` ends the message. A pipe is read (--plan <(...))."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_TEXT_BYTES + 1)
        if len(data) > MAX_TEXT_BYTES:
            raise ConfigError(
                f"{kind} {path} is over {MAX_TEXT_BYTES >> 20} MiB, more than any plan, profile or "
                f"configuration holds: give the right path{'; ' + advice if advice else ''}"
            )
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        said = f"{kind} {path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
    except OSError as error:
        said = f"cannot read {kind} {path}: {error.strerror or error}"
    raise ConfigError(f"{said}{'; ' + advice if advice else ''}")


TMP_SUFFIX = ".tmp"  # of the file a write goes through, beside its path


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a file beside it, so a reader sees the old file or the new one."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(path)  # readers never see half a file
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # a failed write leaves nothing beside the file
        if isinstance(error, (FileExistsError, NotADirectoryError)):
            # mkdir's own words ("File exists") do not say which part of the path is in the way
            in_the_way = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
            raise ConfigError(
                f"cannot write {path}: {in_the_way} is a file, not a folder; give another path"
            ) from None
        if isinstance(error, OSError):
            raise ConfigError(f"cannot write {path}: {error.strerror or error}; give another path") from None
        raise


def _dump(obj: Any, schema: tuple[str, int]) -> str:
    body = {"schema": schema[0], "schema_version": schema[1], **_encode(obj)}
    return json.dumps(body, indent=2, allow_nan=False) + "\n"


def _load(text: str, cls: type[T], schema: tuple[str, int], source: str, hint: str) -> T:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{source} is not valid JSON ({error}); {hint}") from None
    if not isinstance(data, dict) or data.get("schema") != schema[0]:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{source} is not a {schema[0]} file (schema {found!r}); {hint}")
    version = data.get("schema_version")
    if version != schema[1]:
        raise ConfigError(
            f"{source} has {schema[0]} schema_version {version!r}; this partition reads version {schema[1]}: {hint}"
        )
    body = {key: value for key, value in data.items() if key not in ("schema", "schema_version")}
    try:
        return _decode(cls, body, "")
    except _FieldError as error:
        raise ConfigError(f"{source}: {error}; {hint}") from None


class _FieldError(Exception):
    """A field-level problem; `_load` adds the file name and the fix."""


def decode_fields(cls: type[T], data: Any, source: str, path: str) -> T:
    """Parsed JSON `data` as the dataclass `cls`, read as strictly as an artifact's fields: a ConfigError
    "`source`: `path`.field: ..." for a missing, extra or mistyped field (a table inside another file)."""
    try:
        return _decode(cls, data, path)
    except _FieldError as error:
        raise ConfigError(f"{source}: {error}") from None


def _encode(obj: Any) -> Any:
    if isinstance(obj, ModelRef):
        return {"name": obj.name, "digest": obj.digest, "n_blocks": obj.n_blocks, "n_units": obj.n_units}
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if isinstance(value, Segment):
                out["start"], out["end"] = value.start, value.end
            else:
                out[field.name] = _encode(value)
        return out
    if isinstance(obj, tuple | list):
        return [_encode(item) for item in obj]
    return obj


def _decode(tp: Any, data: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if data is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _decode(inner, data, path)
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(data, list):
            raise _FieldError(f"{path or 'top level'}: expected a list, got {_show(data)}")
        return tuple(_decode(item_type, item, f"{path}[{i}]") for i, item in enumerate(data))
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, data, path)
    return _decode_scalar(tp, data, path)


def _decode_dataclass(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise _FieldError(f"{path or 'top level'}: expected an object, got {_show(data)}")
    data = dict(data)
    prefix = f"{path}." if path else ""
    if cls is ModelRef and "n_units" in data:
        n_units = data.pop("n_units")
        if "n_blocks" in data and n_units != _decode_scalar(int, data["n_blocks"], f"{prefix}n_blocks") + 2:
            raise _FieldError(f"{prefix}n_units {n_units!r} disagrees with n_blocks {data['n_blocks']!r} + 2")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if hints[field.name] is Segment:
            start = _decode_scalar(int, _take(data, "start", prefix), f"{prefix}start")
            end = _decode_scalar(int, _take(data, "end", prefix), f"{prefix}end")
            try:
                values[field.name] = Segment(start, end)
            except ValueError as error:
                raise _FieldError(f"{prefix}start/end: {error}") from None
        elif field.name in data:
            values[field.name] = _decode(hints[field.name], data.pop(field.name), f"{prefix}{field.name}")
        elif field.default is dataclasses.MISSING:
            raise _FieldError(f"{prefix}{field.name} is missing")
    if data:
        raise _FieldError(f"{path or 'top level'}: unknown field(s) {', '.join(sorted(data))}")
    try:
        return cls(**values)
    except (TypeError, ValueError, ConfigError) as error:  # ConfigError: a CodecSpec's own check
        raise _FieldError(f"{path or 'top level'}: {error}") from None


def _take(data: dict, key: str, prefix: str) -> Any:
    if key not in data:
        raise _FieldError(f"{prefix}{key} is missing")
    return data.pop(key)


def _decode_scalar(tp: Any, data: Any, path: str) -> Any:
    if tp is float and isinstance(data, int | float) and not isinstance(data, bool):
        try:
            value = float(data)  # an int of 400 digits is no float
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise _FieldError(f"{path}: expected a finite number, got {_show(data)}")
        return value
    if tp is int and isinstance(data, int) and not isinstance(data, bool):
        return data
    if tp in (str, bool) and isinstance(data, tp):
        return data
    raise _FieldError(f"{path}: expected {getattr(tp, '__name__', tp)}, got {_show(data)}")


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) < 40 else text[:37] + "..."
