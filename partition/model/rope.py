"""Rotary position embeddings, HF layout (rotate the two halves of each head), with Llama 3 scaling."""

from __future__ import annotations

import math

import torch

from partition.model.spec import ModelSpec


def inverse_frequencies(spec: ModelSpec) -> torch.Tensor:
    dim = spec.head_dim
    inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    scaling = spec.rope_scaling
    if scaling is None:
        return inv_freq.float()
    # Llama 3: keep high frequencies, divide low ones by `factor`, blend in between
    # (transformers' `_compute_llama3_parameters`).
    low_wavelen = scaling.original_max_position / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_position / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled).float()


class RotaryTable:
    """cos/sin for every position up to max_len: [max_len, head_dim] each."""

    def __init__(self, spec: ModelSpec, max_len: int, device: torch.device | str = "cpu"):
        inv_freq = inverse_frequencies(spec).to(device)
        positions = torch.arange(max_len, device=device, dtype=torch.float32)
        freqs = torch.outer(positions, inv_freq)  # [T, Dh/2]
        angles = torch.cat((freqs, freqs), dim=-1)  # [T, Dh]
        self.cos = angles.cos()
        self.sin = angles.sin()

    def at(self, positions_BS: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for each position, shaped [B, 1, S, Dh] to broadcast over heads."""
        return self.cos[positions_BS].unsqueeze(1).to(dtype), self.sin[positions_BS].unsqueeze(1).to(dtype)


def apply_rotary(x_BHSD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x_BHSD.shape[-1] // 2
    rotated = torch.cat((-x_BHSD[..., half:], x_BHSD[..., :half]), dim=-1)
    return x_BHSD * cos + rotated * sin
