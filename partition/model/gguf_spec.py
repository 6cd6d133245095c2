"""ModelSpec from GGUF metadata (the keys llama.cpp's converter writes)."""

from __future__ import annotations

from typing import Any

from partition.errors import UnsupportedModelError
from partition.model.spec import ModelSpec

SUPPORTED_GGUF_ARCHITECTURES = ("llama", "qwen2", "gpt2")


def gguf_metadata(gguf) -> dict[str, Any]:
    """Scalar and string fields of a partition.model.gguf_file.GGUFFile (token lists are read separately)."""
    fields = {}
    for key, value in gguf.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
            continue
        if key.startswith("tokenizer.ggml.") and key.endswith("scores"):
            continue
        fields[key] = value
    return fields


def spec_from_gguf(meta: dict[str, Any], tensor_names: set[str]) -> ModelSpec:
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise UnsupportedModelError(
            f"unsupported GGUF architecture {arch!r}: supported are {', '.join(SUPPORTED_GGUF_ARCHITECTURES)}"
        )
    if "rope_freqs.weight" in tensor_names:
        raise UnsupportedModelError(
            "this GGUF carries rope_freqs (Llama 3 rope scaling); load the Hugging Face directory instead"
        )

    def key(name: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{name}", default)

    # llama.cpp's converter writes linear and YaRN rope scaling as keys (older files: rope.scale_linear);
    # rotating by the unscaled frequencies would compute another model.
    scaling = key("rope.scaling.type")
    if scaling not in (None, "none") or float(key("rope.scale_linear", 1.0)) != 1.0:
        raise UnsupportedModelError(
            f"this GGUF scales its rope ({arch}.rope.scaling.type = {scaling or 'linear'}), which is not "
            "supported; use a checkpoint without rope scaling"
        )

    hidden = int(key("embedding_length"))
    n_heads = int(key("attention.head_count"))
    vocab = key("vocab_size")
    if vocab is None:
        raise UnsupportedModelError(f"GGUF has no vocab size: neither {arch}.vocab_size nor a token list")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    common = dict(
        model_type=arch,
        n_blocks=int(key("block_count")),
        hidden_size=hidden,
        intermediate_size=int(key("feed_forward_length")),
        n_heads=n_heads,
        vocab_size=int(vocab),
        max_context=int(key("context_length", 2048)),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=() if eos is None else (int(eos),),
    )
    if arch == "gpt2":
        return ModelSpec(
            family="gpt2",
            n_kv_heads=n_heads,
            head_dim=hidden // n_heads,
            norm_eps=float(key("attention.layer_norm_epsilon", 1e-5)),
            attention_bias=True,
            tie_embeddings="output.weight" not in tensor_names,
            **common,
        )
    return ModelSpec(
        family="llama",
        n_kv_heads=int(key("attention.head_count_kv", n_heads)),
        head_dim=int(key("attention.key_length", hidden // n_heads)),
        norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        attention_bias=arch == "qwen2",
        tie_embeddings="output.weight" not in tensor_names,
        **common,
    )
