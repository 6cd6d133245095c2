"""Preallocated KV cache for the blocks of one segment: one slot per session.

Layout: keys and values are each [n_blocks, slots, n_kv_heads, max_len, head_dim] in one allocation;
block i of the segment sees the views k[i], v[i] of shape [slots, n_kv_heads, max_len, head_dim].
Serve: a stage worker gives each session a slot; the session's position says how much of it is filled.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        n_blocks: int,
        slots: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        shape = (n_blocks, slots, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.slots = slots
        self.max_len = max_len  # tokens per slot

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[index], self.v[index]

    def clear_slot(self, slot: int, positions: int | None = None) -> None:
        """Zero a slot's first `positions` (default: all) so that a new session cannot read a previous
        one's keys (positions also guard this)."""
        self.k[:, slot, :, :positions].zero_()
        self.v[:, slot, :, :positions].zero_()
