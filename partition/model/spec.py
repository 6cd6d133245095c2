"""What a model is, independent of where its weights live: read from an HF config.json or GGUF metadata.

Part of the model engine (used by every stage: profile, deploy, serve). Two families are supported:
`llama` (Llama 2/3, SmolLM2, TinyLlama, Mistral without sliding window, Qwen2 with q/k/v bias) and `gpt2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from partition.errors import UnsupportedModelError

# HF `architectures[0]` / `model_type` -> our family.
_HF_FAMILIES = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "gpt2": "gpt2",
}
SUPPORTED_HF_MODEL_TYPES = tuple(_HF_FAMILIES)


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3 style frequency scaling (`rope_type = "llama3"`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position: int  # tokens


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "llama" or "gpt2"
    model_type: str  # as the checkpoint names it: llama, mistral, qwen2, gpt2
    n_blocks: int
    hidden_size: int  # D
    intermediate_size: int  # MLP width
    n_heads: int
    n_kv_heads: int  # < n_heads means grouped-query attention
    head_dim: int
    vocab_size: int
    max_context: int  # tokens
    norm_eps: float
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    attention_bias: bool = False  # q/k/v bias (Qwen2, GPT-2)
    gelu_approximate: str = "tanh"  # GPT-2's GELU: "tanh" (gelu_new) or "none" (the exact "gelu")
    tie_embeddings: bool = False  # LM head shares the embedding matrix
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @property
    def n_units(self) -> int:
        return self.n_blocks + 2

    def kv_bytes_per_token(self, bytes_per_value: int = 4) -> int:
        """KV-cache bytes one token adds to one block (keys and values)."""
        return 2 * self.n_kv_heads * self.head_dim * bytes_per_value

    @staticmethod
    def from_hf_config(config: dict[str, Any]) -> ModelSpec:
        for key in _WHOLE_NUMBERS:
            if config.get(key) is not None and not _whole_number(config[key]):
                raise UnsupportedModelError(
                    f"config.json: {key} = {config[key]!r} is not a whole number > 0; give the checkpoint's "
                    "whole config.json as Hugging Face wrote it"
                )
        try:
            return ModelSpec._from_hf_config(config)
        except KeyError as missing:
            raise UnsupportedModelError(
                f"config.json has no {missing.args[0]!r}, which a {config.get('model_type')} model needs: "
                "give the checkpoint's whole config.json as Hugging Face wrote it"
            ) from None

    @staticmethod
    def _from_hf_config(config: dict[str, Any]) -> ModelSpec:
        model_type = config.get("model_type", "")
        family = _HF_FAMILIES.get(model_type)
        if family is None:
            raise UnsupportedModelError(
                f"unsupported architecture {model_type!r}: supported model types are "
                f"{', '.join(SUPPORTED_HF_MODEL_TYPES)}"
            )
        if family == "gpt2":
            return _gpt2_spec(config)
        # A window at or beyond the context changes nothing; a shorter one needs a rolling cache.
        window = config.get("sliding_window") if model_type == "mistral" else None
        if window and window < config.get("max_position_embeddings", 0):
            raise UnsupportedModelError(
                f"Mistral with sliding_window={window} is not supported "
                "(only full attention); use a checkpoint without a sliding window"
            )
        if model_type == "qwen2" and config.get("use_sliding_window"):
            raise UnsupportedModelError("Qwen2 with use_sliding_window=true is not supported")
        # Llama's attention_bias puts a bias on o_proj too, and mlp_bias on the MLP: weights these
        # blocks do not have, which would load without error and compute another model.
        unsupported = [flag for flag in ("attention_bias", "mlp_bias") if config.get(flag)]
        if model_type == "qwen2":  # Qwen2's q/k/v bias is its own, without the flag
            unsupported = [flag for flag in unsupported if flag != "attention_bias"]
        if unsupported:
            raise UnsupportedModelError(
                f"{model_type} with {' and '.join(f'{flag}=true' for flag in unsupported)} is not supported "
                "(biases on o_proj or the MLP); use a checkpoint without them"
            )
        n_heads = config["num_attention_heads"]
        hidden = config["hidden_size"]
        eos = config.get("eos_token_id")
        return ModelSpec(
            family="llama",
            model_type=model_type,
            n_blocks=config["num_hidden_layers"],
            hidden_size=hidden,
            intermediate_size=config["intermediate_size"],
            n_heads=n_heads,
            n_kv_heads=config.get("num_key_value_heads") or n_heads,
            head_dim=config.get("head_dim") or hidden // n_heads,
            vocab_size=config["vocab_size"],
            max_context=config.get("max_position_embeddings", 2048),
            norm_eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=_rope_theta(config),
            rope_scaling=_rope_scaling(config),
            attention_bias=model_type == "qwen2",
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            bos_token_id=config.get("bos_token_id"),
            eos_token_ids=_as_tuple(eos),
        )


def _gpt2_spec(config: dict[str, Any]) -> ModelSpec:
    hidden = config["n_embd"]
    n_heads = config["n_head"]
    activation = config.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
        raise UnsupportedModelError(f"GPT-2 activation {activation!r} is not supported")
    return ModelSpec(
        family="gpt2",
        model_type="gpt2",
        n_blocks=config["n_layer"],
        hidden_size=hidden,
        intermediate_size=config.get("n_inner") or 4 * hidden,
        n_heads=n_heads,
        n_kv_heads=n_heads,
        head_dim=hidden // n_heads,
        vocab_size=config["vocab_size"],
        max_context=config.get("n_positions", 1024),
        norm_eps=config.get("layer_norm_epsilon", 1e-5),
        attention_bias=True,
        gelu_approximate="none" if activation == "gelu" else "tanh",
        tie_embeddings=True,
        bos_token_id=config.get("bos_token_id"),
        eos_token_ids=_as_tuple(config.get("eos_token_id")),
    )


def _rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    # transformers >= 5 writes `rope_parameters`; older configs write `rope_theta` + `rope_scaling`.
    params = dict(config.get("rope_parameters") or {})
    if config.get("rope_scaling"):
        params.update(config["rope_scaling"])
    return params


def _rope_theta(config: dict[str, Any]) -> float:
    return float(_rope_parameters(config).get("rope_theta") or config.get("rope_theta") or 10000.0)


def _rope_scaling(config: dict[str, Any]) -> RopeScaling | None:
    params = _rope_parameters(config)
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type == "default":
        return None
    if rope_type != "llama3":
        raise UnsupportedModelError(f"rope scaling {rope_type!r} is not supported (default and llama3 are)")
    return RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position=int(params["original_max_position_embeddings"]),
    )


# The sizes the spec is built from, in either family's names: a string or a fraction in any of them
# would fail deep in the arithmetic, not here
_WHOLE_NUMBERS = (
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "num_hidden_layers",
    "intermediate_size",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "n_embd",
    "n_head",
    "n_layer",
    "n_inner",
    "n_positions",
)


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _as_tuple(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)
