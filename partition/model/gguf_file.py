"""The key/values and tensor directory of a `.gguf` file (model: where a GGUF's spec, tokenizer and
weights are read from).

gguf-py's GGUFReader makes a numpy view per value it parses: for SmolLM2's 49k-token vocabulary and
its 49k merges that took 3 s at every process start on this CPU (each worker, serve, generate, and a
worker started again mid-request waits for it). This reads the same layout with `struct` from one
read-only memory map, in about 0.1 s. Tensors stay views of the map (only what is read is paged in)
and are dequantized by gguf-py's kernels, as before.

Layout (GGUF v2 and v3, little-endian): "GGUF", version u32, tensor count u64, key/value count u64;
each key/value: key (u64 length + UTF-8), value type u32, value (a string is u64 length + UTF-8, an
array is element type u32 + count u64 + elements); each tensor: name, n_dims u32, dims u64 (fastest
varying first), GGML type u32, data offset u64; then padding to `general.alignment` (32 if absent),
then the tensor data.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quant_shape_to_byte_shape

_STRING, _ARRAY = 8, 9
# value type -> struct format code, which numpy reads as the same type ("<" + code)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
# Unquantized tensor types, read as typed values; every other type as bytes per row.
_TYPED = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F64: np.float64,
    GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16,
    GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    tensor_type: GGMLQuantizationType
    shape: tuple[int, ...]  # as the file lists it: fastest varying first
    data: np.ndarray  # read-only view: [rows..., values] typed, or [rows..., bytes] for quantized types


class GGUFFile:
    """`fields`: key -> int, float, bool, str or a list of them (a nested array as nested lists, where
    gguf-py's `contents()` flattens it); `tensors`: in file order.
    ValueError when the file is not GGUF v2/v3 or is cut short."""

    def __init__(self, path: Path | str) -> None:
        with open(path, "rb") as file:
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._read()
        except struct.error as error:
            raise ValueError(
                f"the file ends inside its header ({error}): it is cut short; download it again"
            ) from None

    def _read(self) -> None:
        magic, version, n_tensors, n_fields = struct.unpack_from("<4sIQQ", self._map, 0)
        if magic == b"GGUF" and version in (2 << 24, 3 << 24):
            raise ValueError("it is a big-endian GGUF; only little-endian files are read (convert it again)")
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"not a GGUF v2/v3 file (magic {magic!r}, version {version})")
        offset = 24
        self.fields: dict[str, Any] = {}
        for _ in range(n_fields):
            key, offset = self._string(offset)
            (kind,) = struct.unpack_from("<I", self._map, offset)
            self.fields[key], offset = self._value(kind, offset + 4)
        directory = []
        for _ in range(n_tensors):
            name, offset = self._string(offset)
            (n_dims,) = struct.unpack_from("<I", self._map, offset)
            dims = struct.unpack_from(f"<{n_dims}Q", self._map, offset + 4)
            kind, data_offset = struct.unpack_from("<IQ", self._map, offset + 4 + 8 * n_dims)
            offset += 4 + 8 * n_dims + 12
            directory.append((name, dims, kind, data_offset))
        alignment = self.fields.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment < 8 or alignment % 8:
            raise ValueError(f"general.alignment is {alignment!r}, not a positive multiple of 8")
        start = offset + (-offset % alignment)
        # A file cut short (a download that stopped) would fail in numpy with "buffer is smaller than
        # requested size"; the directory says how long the file must be.
        ends = (start + data_offset + _data_bytes(dims, kind) for _, dims, kind, data_offset in directory)
        needed = max(ends, default=start)
        if needed > len(self._map):
            raise ValueError(
                f"the file is truncated: it has {len(self._map)} bytes, and its header and tensor table need "
                f"{needed}; download it again"
            )
        self.tensors = [self._tensor(start, *entry) for entry in directory]
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise ValueError("the file lists a tensor name twice")

    def _string(self, offset: int) -> tuple[str, int]:
        (length,) = struct.unpack_from("<Q", self._map, offset)
        end = offset + 8 + length
        if end > len(self._map):
            raise ValueError(f"a string at byte {offset} runs past the end of the file")
        return self._map[offset + 8 : end].decode("utf-8"), end

    def _value(self, kind: int, offset: int) -> tuple[Any, int]:
        if kind == _STRING:
            return self._string(offset)
        if kind in _SCALARS:
            code = _SCALARS[kind]
            return struct.unpack_from("<" + code, self._map, offset)[0], offset + struct.calcsize(code)
        if kind != _ARRAY:
            raise ValueError(f"unknown GGUF value type {kind} at byte {offset}")
        element, count = struct.unpack_from("<IQ", self._map, offset)
        offset += 12
        if element in _SCALARS:  # numbers in one go: token types, scores
            values = np.frombuffer(self._map, np.dtype("<" + _SCALARS[element]), count, offset)
            return values.tolist(), offset + values.nbytes
        items = []
        for _ in range(count):  # strings (tokens, merges) or nested arrays
            item, offset = self._value(element, offset)
            items.append(item)
        return items, offset

    def _tensor(self, start: int, name: str, dims: tuple[int, ...], kind: int, offset: int) -> GGUFTensor:
        tensor_type = GGMLQuantizationType(kind)
        n_values = math.prod(dims)
        rows_first = tuple(reversed(dims))
        if tensor_type in _TYPED:
            data = np.frombuffer(self._map, _TYPED[tensor_type], n_values, start + offset).reshape(rows_first)
        else:
            data = np.frombuffer(self._map, np.uint8, _data_bytes(dims, kind), start + offset)
            data = data.reshape(quant_shape_to_byte_shape(rows_first, tensor_type))
        return GGUFTensor(name, tensor_type, tuple(dims), data)


def _data_bytes(dims: tuple[int, ...], kind: int) -> int:
    """Bytes of a tensor's data: its values typed, or its quantized blocks."""
    tensor_type = GGMLQuantizationType(kind)
    n_values = math.prod(dims)
    if tensor_type in _TYPED:
        return n_values * np.dtype(_TYPED[tensor_type]).itemsize
    block, block_bytes = GGML_QUANT_SIZES[tensor_type]
    return n_values * block_bytes // block
