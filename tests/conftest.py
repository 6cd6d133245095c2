"""Shared fixtures: the real default model and tiny random checkpoints, built once per test session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

# Deterministic, and the same thread count for the reference and for us.
torch.manual_seed(0)
torch.set_num_threads(2)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Profiles and model digests go to a cache of this session, which every worker, CLI run and Ray actor
# started by a test inherits: tests neither read what another run measured nor write into the user's
# ~/.cache/partition.
os.environ["PARTITION_CACHE_DIR"] = tempfile.mkdtemp(prefix="partition-test-cache-")
atexit.register(shutil.rmtree, os.environ["PARTITION_CACHE_DIR"], ignore_errors=True)
# Likewise the folders of the workers tests start (directly, or through serve --spawn-local): a worker
# a test kills keeps its log, which must not outlive the session.
os.environ["PARTITION_WORKERS_DIR"] = tempfile.mkdtemp(prefix="partition-test-workers-")
atexit.register(shutil.rmtree, os.environ["PARTITION_WORKERS_DIR"], ignore_errors=True)

TINY_KINDS = ("llama", "llama3", "llama-tied", "qwen2", "mistral", "gpt2")
GGUF_QUANTS = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF)."""
    from partition.model import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_whole(smollm2):
    from partition.model import load_segment
    from partition.types import Segment

    return load_segment(smollm2, Segment.whole(smollm2.spec.n_blocks))


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """kind -> directory of a tiny random HF checkpoint."""
    from tests.model.checkpoints import save_tiny_hf

    root = tmp_path_factory.mktemp("tiny")
    return {kind: save_tiny_hf(kind, root / kind) for kind in TINY_KINDS}


@pytest.fixture(scope="session")
def tiny_ggufs(tiny_dirs, tmp_path_factory):
    """quant type -> tiny llama GGUF file converted from tiny_dirs['llama']."""
    from tests.model.checkpoints import write_tiny_gguf

    root = tmp_path_factory.mktemp("gguf")
    return {q: write_tiny_gguf(tiny_dirs["llama"], root / f"tiny-{q}.gguf", q) for q in GGUF_QUANTS}
