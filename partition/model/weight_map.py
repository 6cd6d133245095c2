"""Which checkpoint tensors make up one unit, renamed to our parameter names (deploy: load only your units).

`unit_state(source, unit)` returns `{param name inside the unit module: float32 tensor}`, reading only
that unit's tensors. Conventions handled here and nowhere else:
- GGUF stores Llama q/k rows permuted for interleaved rotary; we undo it (llama.cpp's convert_hf_to_gguf
  `permute`; transformers' GGUF loader does the same) so one rotary layout serves every format.
- GPT-2's HF checkpoints use Conv1D ([in, out]) weights; we transpose to Linear's [out, in].
- Tied embeddings: the head reads the token embedding matrix as its LM head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from partition.errors import UnsupportedModelError
from partition.model.checkpoint import CheckpointReader
from partition.model.spec import ModelSpec
from partition.types import unit_kind


def unit_state(source, unit: int) -> dict[str, torch.Tensor]:
    spec: ModelSpec = source.spec
    reader = source.reader()
    kind = unit_kind(unit, spec.n_blocks)
    block = unit - 1
    mapper = _MAPPERS[(source.format, spec.family)]
    get = _getter(reader, source)
    state = mapper(kind, block, spec, get)
    if kind == "head":  # stored transposed, see layers.Head
        state["lm_head_t"] = state.pop("lm_head.weight").t().contiguous()
    return state


def _getter(reader: CheckpointReader, source) -> Callable[..., torch.Tensor | None]:
    names = reader.names()

    def get(*candidates: str, required: bool = True) -> torch.Tensor | None:
        for name in candidates:
            if name in names:
                return reader.read(name)
        if required:
            raise UnsupportedModelError(
                f"{source.path}: tensor {' or '.join(candidates)} is missing; the checkpoint does not "
                f"match its declared architecture {source.spec.model_type!r}"
            )
        return None

    return get


def _cat(*tensors: torch.Tensor | None) -> torch.Tensor | None:
    return None if any(t is None for t in tensors) else torch.cat(tensors, dim=0)


def _llama_hf(kind: str, block: int, spec: ModelSpec, get) -> dict:
    if kind == "embed":
        return {"tokens.weight": get("model.embed_tokens.weight")}
    if kind == "head":
        lm_head = get("lm_head.weight", required=False)
        if lm_head is None:  # tied (declared or not): the head reads the embedding matrix
            lm_head = get("model.embed_tokens.weight")
        return {"norm.weight": get("model.norm.weight"), "lm_head.weight": lm_head}
    p = f"model.layers.{block}."
    attn = p + "self_attn."
    state = {
        "attn_norm.weight": get(p + "input_layernorm.weight"),
        "attn.wqkv.weight": _cat(*(get(f"{attn}{x}_proj.weight") for x in "qkv")),
        "attn.wo.weight": get(attn + "o_proj.weight"),
        "mlp_norm.weight": get(p + "post_attention_layernorm.weight"),
        "mlp.w_up.weight": _cat(get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")),
        "mlp.w_down.weight": get(p + "mlp.down_proj.weight"),
    }
    if spec.attention_bias:
        state["attn.wqkv.bias"] = _cat(*(get(f"{attn}{x}_proj.bias") for x in "qkv"))
    return state


def _unpermute(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation: [heads, half, 2, ...] -> [heads, 2, half, ...]."""
    half = weight.shape[0] // n_heads // 2
    return weight.reshape(n_heads, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def _llama_gguf(kind: str, block: int, spec: ModelSpec, get) -> dict:
    if kind == "embed":
        return {"tokens.weight": get("token_embd.weight")}
    if kind == "head":
        return {
            "norm.weight": get("output_norm.weight"),
            "lm_head.weight": get("output.weight", "token_embd.weight"),
        }
    p = f"blk.{block}."
    q, k, v = get(p + "attn_q.weight"), get(p + "attn_k.weight"), get(p + "attn_v.weight")
    if spec.model_type == "llama":  # qwen2 is stored for NEOX-style rotary: no permutation
        q, k = _unpermute(q, spec.n_heads), _unpermute(k, spec.n_kv_heads)
    state = {
        "attn_norm.weight": get(p + "attn_norm.weight"),
        "attn.wqkv.weight": _cat(q, k, v),
        "attn.wo.weight": get(p + "attn_output.weight"),
        "mlp_norm.weight": get(p + "ffn_norm.weight"),
        "mlp.w_up.weight": _cat(get(p + "ffn_gate.weight"), get(p + "ffn_up.weight")),
        "mlp.w_down.weight": get(p + "ffn_down.weight"),
    }
    if spec.attention_bias:
        state["attn.wqkv.bias"] = _cat(*(get(f"{p}attn_{x}.bias") for x in "qkv"))
    return state


def _gpt2_hf(kind: str, block: int, spec: ModelSpec, get) -> dict:
    def g(name: str, required: bool = True):
        # GPT2LMHeadModel saves `transformer.`-prefixed names; GPT2Model saves them bare.
        return get("transformer." + name, name, required=required)

    if kind == "embed":
        return {"tokens.weight": g("wte.weight"), "positions.weight": g("wpe.weight")}
    if kind == "head":
        lm_head = get("lm_head.weight", required=False)
        return {
            "norm.weight": g("ln_f.weight"),
            "norm.bias": g("ln_f.bias"),
            "lm_head.weight": lm_head if lm_head is not None else g("wte.weight"),
        }
    p = f"h.{block}."
    return {
        "attn_norm.weight": g(p + "ln_1.weight"),
        "attn_norm.bias": g(p + "ln_1.bias"),
        "attn.wqkv.weight": g(p + "attn.c_attn.weight").T.contiguous(),
        "attn.wqkv.bias": g(p + "attn.c_attn.bias"),
        "attn.wo.weight": g(p + "attn.c_proj.weight").T.contiguous(),
        "attn.wo.bias": g(p + "attn.c_proj.bias"),
        "mlp_norm.weight": g(p + "ln_2.weight"),
        "mlp_norm.bias": g(p + "ln_2.bias"),
        "mlp.w_up.weight": g(p + "mlp.c_fc.weight").T.contiguous(),
        "mlp.w_up.bias": g(p + "mlp.c_fc.bias"),
        "mlp.w_down.weight": g(p + "mlp.c_proj.weight").T.contiguous(),
        "mlp.w_down.bias": g(p + "mlp.c_proj.bias"),
    }


def _gpt2_gguf(kind: str, block: int, spec: ModelSpec, get) -> dict:
    if kind == "embed":
        return {"tokens.weight": get("token_embd.weight"), "positions.weight": get("position_embd.weight")}
    if kind == "head":
        return {
            "norm.weight": get("output_norm.weight"),
            "norm.bias": get("output_norm.bias"),
            "lm_head.weight": get("output.weight", "token_embd.weight"),
        }
    p = f"blk.{block}."
    pairs = {
        "attn_norm": "attn_norm",
        "attn.wqkv": "attn_qkv",
        "attn.wo": "attn_output",
        "mlp_norm": "ffn_norm",
        "mlp.w_up": "ffn_up",
        "mlp.w_down": "ffn_down",
    }
    state = {}
    for ours, theirs in pairs.items():
        state[f"{ours}.weight"] = get(f"{p}{theirs}.weight")
        state[f"{ours}.bias"] = get(f"{p}{theirs}.bias")
    return state


_MAPPERS = {
    ("hf", "llama"): _llama_hf,
    ("gguf", "llama"): _llama_gguf,
    ("hf", "gpt2"): _gpt2_hf,
    ("gguf", "gpt2"): _gpt2_gguf,
}
