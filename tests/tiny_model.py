"""A tiny random Llama checkpoint in Hugging Face layout, for tests that need real model files fast.

4 blocks, hidden 64, GQA 4/2 heads, vocab 96: loads in milliseconds, runs through exactly the code
paths SmolLM2 does (safetensors reader, per-unit loading, rotary, GQA).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 4,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 96,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def write_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """Write config.json and model.safetensors into `directory`; return it."""
    from safetensors.torch import save_file

    c = CONFIG
    generator = torch.Generator().manual_seed(seed)
    D, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    head_dim = D // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.1

    tensors = {
        "model.embed_tokens.weight": rand(V, D),
        "model.norm.weight": torch.ones(D),
        "lm_head.weight": rand(V, D),
    }
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": torch.ones(D),
            p + "post_attention_layernorm.weight": torch.ones(D),
            p + "self_attn.q_proj.weight": rand(D, D),
            p + "self_attn.k_proj.weight": rand(kv, D),
            p + "self_attn.v_proj.weight": rand(kv, D),
            p + "self_attn.o_proj.weight": rand(D, D),
            p + "mlp.gate_proj.weight": rand(F, D),
            p + "mlp.up_proj.weight": rand(F, D),
            p + "mlp.down_proj.weight": rand(D, F),
        }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(CONFIG))
    save_file(tensors, directory / "model.safetensors")
    return directory
