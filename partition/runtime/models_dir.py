"""Which models a worker may read (deploy): built-in names, or paths inside its --models-dir only.

LoadSegment and Profile name a model in a request from the network, so the name must never lead the
worker to open an arbitrary file. Paths are resolved (symlinks followed) and must stay inside the
models dir, and so must every file of a model directory. What a caller is told names the model as it
asked for it, never the models dir's place on the worker's disk (the worker's log has that).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from partition.errors import ModelNotFoundError
from partition.runtime.errors import InvalidRequestError, ModelAccessError

log = logging.getLogger(__name__)


def resolve_allowed(model: str, models_dir: Path | None):
    """The `ModelSource` for `model`; ModelAccessError (PERMISSION_DENIED) if it lies outside `models_dir`."""
    from partition.model import BUILTIN_MODELS, resolve_model

    if not model:
        raise InvalidRequestError(
            f"no model named: give a built-in name ({', '.join(BUILTIN_MODELS)}) or a path inside the "
            "worker's --models-dir"
        )
    if "\x00" in model:  # no path holds one; Path.resolve would fail with ValueError
        raise InvalidRequestError("the model name holds a NUL character; name a built-in model or a path")
    if model in BUILTIN_MODELS:
        found = resolve_model(model)
        return _opened(model, found.path, found.format)
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
    try:
        found = resolve_model(path)
    except ModelNotFoundError as error:
        log.warning("model %r not found in --models-dir %s: %s", model, root, error)
        raise ModelNotFoundError(
            f"model {model!r} is not in this worker's --models-dir (no GGUF file or HF directory with a "
            "config.json by that path); copy the model there, or name it by its path relative to that directory"
        ) from None
    return _opened(model, found.path, found.format)  # named as the caller asked, read inside the dir


def _opened(name: str, path: Path, format: str):
    """The same ModelSource for the same files as long as none changed (name, inode, size, times):
    opening a GGUF parses its metadata (about 2.5 s for SmolLM2's 49k-token vocabulary on this CPU),
    and every LoadSegment names the model again, also when it changes nothing (a redeploy, a reload
    after another worker restarted). A changed file opens afresh, with its new digest."""
    files = sorted(path.iterdir()) if format == "hf" else [path]
    stats = [(f.name, f.stat()) for f in files]
    # the inode and change time too: a copy that keeps size and mtime (cp -p, rsync -a) still differs
    identity = tuple((n, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for n, st in stats)
    return _source(name, str(path), format, identity)


@functools.lru_cache(maxsize=4)
def _source(name: str, path: str, format: str, identity: tuple):
    from partition.model.source import ModelSource

    return ModelSource(name, Path(path), format)


def _check_inside(path: Path, root: Path, model: str) -> None:
    if not path.is_relative_to(root):
        log.warning("refused model %r: %s is outside --models-dir %s", model, path, root)
        raise ModelAccessError(
            f"model path {model!r} leads outside the worker's --models-dir; put the model inside "
            "that directory and name it by its path relative to it"
        )
