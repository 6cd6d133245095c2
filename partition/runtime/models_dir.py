"""Which models a worker may read (deploy): built-in names, or paths inside its --models-dir only.

LoadSegment and Profile name a model in a request from the network, so the name must never lead the
worker to open an arbitrary file. Paths are resolved (symlinks followed) and must stay inside the
models dir, and so must every file of a model directory.
"""

from __future__ import annotations

from pathlib import Path

from partition.runtime.errors import InvalidRequestError, ModelAccessError


def resolve_allowed(model: str, models_dir: Path | None):
    """The `ModelSource` for `model`; ModelAccessError (PERMISSION_DENIED) if it lies outside `models_dir`."""
    from partition.model import BUILTIN_MODELS, resolve_model
    from partition.model.source import ModelSource

    if not model:
        raise InvalidRequestError(
            f"no model named: give a built-in name ({', '.join(BUILTIN_MODELS)}) or a path inside the "
            "worker's --models-dir"
        )
    if model in BUILTIN_MODELS:
        return resolve_model(model)
    if models_dir is None:
        raise ModelAccessError(
            f"model {model!r} is not a built-in name ({', '.join(BUILTIN_MODELS)}) and this worker has no "
            "--models-dir, so it reads no model files; restart it with --models-dir DIR and put the model there"
        )
    root = models_dir.resolve()
    candidate = Path(model)
    if not candidate.is_absolute():
        candidate = root / candidate
    path = candidate.resolve()
    _check_inside(path, root, model)
    if path.is_dir():
        for entry in path.iterdir():  # an HF directory's files may be symlinks (the HF cache uses them)
            _check_inside(entry.resolve(), root, model)
    found = resolve_model(path)
    return ModelSource(model, found.path, found.format)  # named as the caller asked, read inside the dir


def _check_inside(path: Path, root: Path, model: str) -> None:
    if not path.is_relative_to(root):
        raise ModelAccessError(
            f"model path {model!r} leads outside the worker's --models-dir {root}; put the model inside "
            "that directory and name it by its path relative to it"
        )
