"""Transformer units: embedding, block (attention + MLP), head. Nothing here knows about distribution.

Parameter names inside each unit are the canonical names the weight map fills
(e.g. `attn.wqkv.weight`, `mlp.w_gate_up.weight`); q/k/v and gate/up are fused into one matmul each.
Activations are [batch, seq, hidden] (`_BSD`); heads are [batch, heads, seq, head_dim] (`_BHSD`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from partition.model.rope import apply_rotary
from partition.model.spec import ModelSpec


@dataclass
class StepContext:
    """What every block of a segment needs for one forward step, computed once per step."""

    slots: list[int]  # KV-cache slot of each batch row
    starts: list[int]  # position of the first new token of each row
    n_tokens: int  # new tokens per row (S)
    positions: torch.Tensor  # [B, S] int64: the position of every new token
    kv_len: int  # keys each row attends over at most: max(starts) + S
    # slots as a tensor, for batched gathers (B > 1); None for one row, or rows in consecutive slots
    slot_index: torch.Tensor | None
    cos: torch.Tensor | None  # [B, 1, S, Dh] rotary tables (None for GPT-2)
    sin: torch.Tensor | None
    mask: torch.Tensor | None  # [B, 1, S, kv_len] bool, True = attend; None when not needed
    causal: bool  # let SDPA apply the causal mask (single row, prefill from position 0)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(spec: ModelSpec) -> nn.Module:
    if spec.family == "gpt2":
        return nn.LayerNorm(spec.hidden_size, eps=spec.norm_eps)
    return RMSNorm(spec.hidden_size, spec.norm_eps)


def stores_transposed(in_features: int, out_features: int) -> bool:
    """Whether a projection keeps its weight as [in, out] rather than the checkpoint's [out, in].

    For one token on the CPU (MKL), `x @ W[in, out]` streams a cold weight matrix faster than
    `F.linear(x, W[out, in])` when the output is at least as wide as the input (SmolLM2 shapes, 1 and
    2 threads: q/k/v 1.4x, gate/up 1.8x, LM head 1.8x) and slower when it is narrower (down 0.77x).
    Decoding reads every weight once per token, so this layout decides decode speed.
    """
    return out_features >= in_features


class Projection(nn.Module):
    """A linear layer whose weight layout follows `stores_transposed` (y = x W^T + b either way)."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.transposed = stores_transposed(in_features, out_features)
        shape = (in_features, out_features) if self.transposed else (out_features, in_features)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transposed:
            return F.linear(x, self.weight, self.bias)
        x_2D = x.reshape(-1, x.shape[-1])
        y_2D = x_2D @ self.weight if self.bias is None else torch.addmm(self.bias, x_2D, self.weight)
        return y_2D.view(*x.shape[:-1], -1)


def to_module_layout(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint-layout tensors ([out, in] weights) -> the layout `module`'s projections keep."""
    for name, sub in module.named_modules():
        if isinstance(sub, Projection) and sub.transposed:
            key = f"{name}.weight" if name else "weight"
            state[key] = state[key].t().contiguous()
    return state


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = spec.n_heads, spec.n_kv_heads, spec.head_dim
        q_dim, kv_dim = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
        self.split = [q_dim, kv_dim, kv_dim]
        self.wqkv = Projection(spec.hidden_size, q_dim + 2 * kv_dim, bias=spec.attention_bias)
        self.wo = Projection(q_dim, spec.hidden_size, bias=spec.family == "gpt2")

    def forward(
        self, x_BSD: torch.Tensor, ctx: StepContext, k_cache: torch.Tensor, v_cache: torch.Tensor
    ) -> torch.Tensor:
        B, S, _ = x_BSD.shape
        q, k, v = self.wqkv(x_BSD).split(self.split, dim=-1)
        q_BHSD = q.view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        k_BHSD = k.view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v_BHSD = v.view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if ctx.cos is not None:
            q_BHSD = apply_rotary(q_BHSD, ctx.cos, ctx.sin)
            k_BHSD = apply_rotary(k_BHSD, ctx.cos, ctx.sin)
        keys, values = _update_cache(k_cache, v_cache, k_BHSD, v_BHSD, ctx)
        y_BHSD = F.scaled_dot_product_attention(
            q_BHSD,
            keys,
            values,
            attn_mask=ctx.mask,
            is_causal=ctx.causal,
            enable_gqa=self.n_heads != self.n_kv_heads,
        )
        return self.wo(y_BHSD.transpose(1, 2).reshape(B, S, -1))


def _update_cache(k_cache, v_cache, k_BHSD, v_BHSD, ctx: StepContext):
    """Write the new keys/values at each row's positions; return what each row attends over."""
    S = ctx.n_tokens
    if len(ctx.slots) == 1:  # one session: slice views, no gather
        slot, start = ctx.slots[0], ctx.starts[0]
        k_cache[slot, :, start : start + S] = k_BHSD[0]
        v_cache[slot, :, start : start + S] = v_BHSD[0]
        end = start + S
        return k_cache[slot : slot + 1, :, :end], v_cache[slot : slot + 1, :, :end]
    for row, (slot, start) in enumerate(zip(ctx.slots, ctx.starts, strict=True)):
        k_cache[slot, :, start : start + S] = k_BHSD[row]
        v_cache[slot, :, start : start + S] = v_BHSD[row]
    if ctx.slot_index is None:  # rows in consecutive slots, in order: a view, where a gather copies
        first = ctx.slots[0]  # every row's keys up to kv_len (25 MB a block for 8 rows of 2048)
        rows = slice(first, first + len(ctx.slots))
        return k_cache[rows, :, : ctx.kv_len], v_cache[rows, :, : ctx.kv_len]
    return k_cache[ctx.slot_index, :, : ctx.kv_len], v_cache[ctx.slot_index, :, : ctx.kv_len]


class MLP(nn.Module):
    """SwiGLU for the Llama family, GELU (tanh-approximated, or exact where the config says "gelu") for
    GPT-2."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.gated = spec.family != "gpt2"
        self.gelu_approximate = spec.gelu_approximate
        bias = spec.family == "gpt2"
        width = 2 * spec.intermediate_size if self.gated else spec.intermediate_size
        self.w_up = Projection(spec.hidden_size, width, bias=bias)  # [gate; up] when gated
        self.w_down = Projection(spec.intermediate_size, spec.hidden_size, bias=bias)

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate, up = self.w_up(x_BSD).chunk(2, dim=-1)
            return self.w_down(F.silu(gate) * up)
        return self.w_down(F.gelu(self.w_up(x_BSD), approximate=self.gelu_approximate))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.attn_norm = make_norm(spec)
        self.attn = Attention(spec)
        self.mlp_norm = make_norm(spec)
        self.mlp = MLP(spec)

    def forward(self, x_BSD, ctx: StepContext, k_cache, v_cache) -> torch.Tensor:
        x_BSD = x_BSD + self.attn(self.attn_norm(x_BSD), ctx, k_cache, v_cache)
        return x_BSD + self.mlp(self.mlp_norm(x_BSD))


class Embedding(nn.Module):
    """Token embedding, plus learned positions for GPT-2."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.positions = nn.Embedding(spec.max_context, spec.hidden_size) if spec.family == "gpt2" else None
        self.table_DV: torch.Tensor | None = None  # the head's [D, V] matrix, when tied and in this process

    def share_table(self, table_DV: nn.Parameter) -> None:
        """Read token vectors from the head's [D, V] matrix (tied embeddings: one copy, not two)."""
        self.tokens = None
        self.table_DV = table_DV

    def forward(self, ids_BS: torch.Tensor, positions_BS: torch.Tensor) -> torch.Tensor:
        if self.table_DV is not None:
            B, S = ids_BS.shape
            # contiguous: a strided activation takes another matmul kernel and rounds differently
            x_BSD = self.table_DV.index_select(1, ids_BS.reshape(-1)).t().contiguous().view(B, S, -1)
        else:
            x_BSD = self.tokens(ids_BS)
        if self.positions is not None:
            x_BSD = x_BSD + self.positions(positions_BS)
        return x_BSD


class Head(nn.Module):
    """Final norm + LM head: hidden states [B, S, D] -> logits [B, S, V]."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.norm = make_norm(spec)
        self.lm_head = Projection(spec.hidden_size, spec.vocab_size, bias=False)

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(x_BSD))
