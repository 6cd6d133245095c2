"""Read single tensors from a checkpoint without loading the rest (deploy: a worker loads only its layers).

Two readers with one interface, `names()` and `read(name) -> float32 tensor` in the checkpoint's own
naming: Hugging Face safetensors (one file or a sharded index, via `safe_open` per tensor) and GGUF
(memory-mapped by the `gguf` reader; quantized tensors are dequantized one at a time).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from partition.errors import ModelNotFoundError, UnsupportedModelError


class CheckpointReader(Protocol):
    def names(self) -> set[str]: ...

    def read(self, name: str) -> torch.Tensor: ...


class SafetensorsReader:
    """A Hugging Face directory: `model.safetensors` or `model.safetensors.index.json` + shards."""

    def __init__(self, directory: Path):
        self.directory = directory
        index = directory / "model.safetensors.index.json"
        single = directory / "model.safetensors"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            # Shards lie beside their index (as Hugging Face writes them): a path elsewhere would read
            # files the model's directory does not hold, past a worker's --models-dir check.
            astray = sorted({str(f) for f in weight_map.values() if not _bare_file_name(f)})
            if astray:
                raise UnsupportedModelError(
                    f"{index} names shard(s) outside its directory: {astray}; list each shard by its file "
                    "name, beside the index"
                )
            self._file_of = {name: directory / file for name, file in weight_map.items()}
        elif single.is_file():
            from safetensors import safe_open

            with _safetensors_read(single), safe_open(single, framework="pt") as handle:
                self._file_of = {name: single for name in handle.keys()}  # noqa: SIM118 (not a dict)
        else:
            raise ModelNotFoundError(
                f"{directory} has no model.safetensors or model.safetensors.index.json "
                "(only safetensors checkpoints are read; convert .bin files with safetensors' convert script)"
            )
        missing = {path for path in self._file_of.values() if not path.is_file()}
        if missing:
            raise ModelNotFoundError(f"shard(s) listed in the index are missing: {sorted(map(str, missing))}")

    def names(self) -> set[str]:
        return set(self._file_of)

    def read(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        file = self._file_of[name]
        with _safetensors_read(file), safe_open(file, framework="pt") as handle:
            return handle.get_tensor(name).to(torch.float32)


@contextlib.contextmanager
def _safetensors_read(file: Path):
    """A file the safetensors library cannot read (truncated, or not safetensors at all) is named."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as error:
        raise UnsupportedModelError(
            f"{file} is not a safetensors file that can be read ({error}); download it again"
        ) from None


def _bare_file_name(file: object) -> bool:
    return (
        isinstance(file, str) and file not in ("", ".", "..") and Path(file).name == file and "\\" not in file
    )


# GGML types we dequantize (through the `gguf` package's reference kernels).
_GGUF_FLOAT_TYPES = {"F32", "F16", "BF16"}
_GGUF_QUANT_TYPES = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
SUPPORTED_GGUF_TYPES = tuple(sorted(_GGUF_FLOAT_TYPES | _GGUF_QUANT_TYPES))


class GGUFCheckpointReader:
    """A `.gguf` file. Tensors are memory-mapped, so only the ones read are paged in."""

    def __init__(self, gguf):  # a partition.model.gguf_file.GGUFFile, opened once with the metadata
        self._tensors = {tensor.name: tensor for tensor in gguf.tensors}

    def names(self) -> set[str]:
        return set(self._tensors)

    def read(self, name: str) -> torch.Tensor:
        from gguf import quants

        tensor = self._tensors[name]
        kind = tensor.tensor_type.name
        if kind in ("F32", "F16"):
            # copy: the memory map is read-only, and the tensor must own its memory
            array = np.array(tensor.data, dtype=np.float32)
        elif kind in _GGUF_QUANT_TYPES or kind == "BF16":
            array = quants.dequantize(tensor.data, tensor.tensor_type)
        else:
            raise UnsupportedModelError(
                f"tensor {name} has GGUF type {kind}, which is not supported; "
                f"supported: {', '.join(SUPPORTED_GGUF_TYPES)}"
            )
        # GGUF lists dims fastest-first; the reader's array is already [rows, cols] like torch.
        shape = tuple(reversed(tensor.shape))
        return torch.from_numpy(np.ascontiguousarray(array).reshape(shape))
