"""Tiny random checkpoints for tests, written the way users get them: `save_pretrained` directories and
GGUF files laid out as llama.cpp's converter writes them (q/k rows permuted, quantized tensors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TINY = dict(hidden=64, intermediate=128, heads=4, kv_heads=2, blocks=3, vocab=256, context=256)


def save_tiny_hf(kind: str, directory: Path, seed: int = 0, **sizes: int) -> Path:
    """A random model of `kind` (llama, llama3, llama-tied, qwen2, mistral, gpt2) saved with save_pretrained;
    `sizes` override TINY's (vocab=8192, ...)."""
    import transformers

    torch.manual_seed(seed)
    t = TINY | sizes
    if kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=t["vocab"],
            n_positions=t["context"],
            n_embd=t["hidden"],
            n_layer=t["blocks"],
            n_head=t["heads"],
            bos_token_id=1,
            eos_token_id=2,
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        common = dict(
            vocab_size=t["vocab"],
            hidden_size=t["hidden"],
            intermediate_size=t["intermediate"],
            num_hidden_layers=t["blocks"],
            num_attention_heads=t["heads"],
            num_key_value_heads=t["kv_heads"],
            max_position_embeddings=t["context"],
            tie_word_embeddings=kind == "llama-tied",
        )
        if kind == "qwen2":
            config, cls = transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
        elif kind == "mistral":
            config, cls = (
                transformers.MistralConfig(sliding_window=None, **common),
                transformers.MistralForCausalLM,
            )
        else:
            config, cls = transformers.LlamaConfig(**common), transformers.LlamaForCausalLM
            if kind == "llama3":
                config.rope_parameters = {
                    "rope_type": "llama3",
                    "rope_theta": 500000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 32,
                }
        model = cls(config)
    # random init is small; scale up so differences between implementations would show
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    model.save_pretrained(directory)
    return directory


def _permute_for_gguf(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf `permute`: rotate-half rows -> interleaved pairs."""
    return (
        weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_tiny_gguf(hf_dir: Path, path: Path, quant: str) -> Path:
    """Convert a tiny HF llama directory to GGUF, matrices stored as `quant` (F32, F16, Q8_0, Q4_0, Q4_1)."""
    import gguf
    from safetensors.torch import load_file

    state = {k: v.float().numpy() for k, v in load_file(hf_dir / "model.safetensors").items()}
    t = TINY
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(t["blocks"])
    writer.add_context_length(t["context"])
    writer.add_embedding_length(t["hidden"])
    writer.add_feed_forward_length(t["intermediate"])
    writer.add_head_count(t["heads"])
    writer.add_head_count_kv(t["kv_heads"])
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(t["vocab"])
    writer.add_rope_dimension_count(t["hidden"] // t["heads"])
    writer.add_tokenizer_model("gpt2")
    tokens = [f"<t{i}>" for i in range(t["vocab"])]
    writer.add_token_list(tokens)
    writer.add_token_types([1] * t["vocab"])
    writer.add_token_merges([])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    qtype = getattr(gguf.GGMLQuantizationType, quant)

    def add(name: str, array: np.ndarray, matrix: bool = True) -> None:
        if not matrix or quant == "F32":
            writer.add_tensor(name, array.astype(np.float32))
        elif quant == "F16":
            writer.add_tensor(name, array.astype(np.float16))
        else:
            data = gguf.quants.quantize(array.astype(np.float32), qtype)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)

    add("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(t["blocks"]):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"], matrix=False)
        add(f"blk.{i}.attn_q.weight", _permute_for_gguf(state[p + "self_attn.q_proj.weight"], t["heads"]))
        add(f"blk.{i}.attn_k.weight", _permute_for_gguf(state[p + "self_attn.k_proj.weight"], t["kv_heads"]))
        add(f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"])
        add(f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"], matrix=False)
        add(f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"])
        add(f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"])
    add("output_norm.weight", state["model.norm.weight"], matrix=False)
    add("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
