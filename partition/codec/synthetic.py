"""Synthetic activations shaped like an LLM's hidden states, for codec tests and benchmarks.

Real hidden states are roughly normal per channel with a few "massive" channels far larger than the
rest (Sun et al. 2024, "Massive Activations in Large Language Models"); those channels are what breaks
per-token int8, so the generator plants them at fixed columns.
"""

from __future__ import annotations

import torch


def synthetic_activations(
    batch: int = 1,
    seq: int = 16,
    hidden: int = 576,
    outlier_columns: tuple[int, ...] = (7, 123, 400),
    outlier_scale: float = 200.0,  # outlier magnitude in units of the typical value
    seed: int = 0,
) -> torch.Tensor:
    """float32 [batch, seq, hidden]: N(0, 1) per value, times `outlier_scale` in `outlier_columns`."""
    generator = torch.Generator().manual_seed(seed)
    x_BSD = torch.randn(batch, seq, hidden, generator=generator)
    # Per-channel spread as in real models: some channels a few times wider than others.
    x_BSD *= torch.empty(hidden).uniform_(0.5, 2.0, generator=generator)
    columns = [c for c in outlier_columns if c < hidden]
    x_BSD[..., columns] = x_BSD[..., columns].sign() * outlier_scale * (1 + x_BSD[..., columns].abs() / 10)
    return x_BSD
