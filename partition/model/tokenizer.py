"""Text <-> token ids on the edge: `tokenizer.json` (the `tokenizers` library) or GGUF metadata, plus the
model's chat template (jinja2, sandboxed as transformers renders it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from partition.errors import ModelNotFoundError, UnsupportedModelError


@dataclass
class Tokenizer:
    backend: object  # tokenizers.Tokenizer
    bos_token: str | None = None
    eos_token: str | None = None
    add_bos: bool = False  # prepend BOS when encoding a raw prompt
    chat_template: str | None = None
    eos_ids: tuple[int, ...] = field(default_factory=tuple)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        # encode_batch lets go of the GIL while it works, encode does not: a long prompt (a second per
        # megabyte here) would stop every other thread of serve meanwhile, the streams it is answering too
        ids = self.backend.encode_batch([text], add_special_tokens=False)[0].ids
        bos = self.token_id(self.bos_token)
        if add_special and self.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special)

    @cached_property
    def max_token_bytes(self) -> int:
        """At least the bytes of text any one token stands for: the longest token's own UTF-8 form (a
        byte-level token spells each byte with one character of one or two bytes). A text longer than
        `n * max_token_bytes` cannot become n tokens or fewer, which is known before tokenizing it."""
        return max(len(token.encode("utf-8")) for token in self.backend.get_vocab())

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of text one token stands for (part of a character, for some): what a reply's
        log-probabilities show for it, since decoding it alone may not give them back."""
        token = self.backend.id_to_token(token_id) or ""
        if token_id in self._special_ids:
            return token.encode("utf-8")
        if self._byte_level:  # each byte spelled by one character (GPT-2's table)
            if all(c in _BYTE_OF_CHARACTER for c in token):
                return bytes(_BYTE_OF_CHARACTER[c] for c in token)
            return token.encode("utf-8")
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):  # SentencePiece's bytes
            try:
                return bytes([int(token[3:5], 16)])
            except ValueError:
                pass
        return token.replace("\u2581", " ").encode("utf-8")

    @cached_property
    def _byte_level(self) -> bool:
        decoder = self.backend.decoder
        return decoder is not None and b'"ByteLevel"' in decoder.__getstate__()

    @cached_property
    def _special_ids(self) -> frozenset[int]:
        return frozenset(
            id_ for id_, added in self.backend.get_added_tokens_decoder().items() if added.special
        )

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise UnsupportedModelError(
                "this model has no chat template; drop --chat and pass the raw prompt"
            )
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )

    @cached_property
    def _template(self):
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str):
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template)


def _byte_of_character() -> dict[str, int]:
    """GPT-2's byte-level alphabet, read backwards: the printable bytes stand for themselves, and every
    other byte for the character 256 places on, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), 256),
    ]
    shifted = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(shifted)}


_BYTE_OF_CHARACTER = _byte_of_character()


def load_tokenizer(source) -> Tokenizer:
    if source.format == "gguf":
        return _from_gguf(source)
    return _from_hf_dir(source.path, source.spec.eos_token_ids)


def _from_hf_dir(directory: Path, eos_ids: tuple[int, ...]) -> Tokenizer:
    from tokenizers import Tokenizer as Backend

    path = directory / "tokenizer.json"
    if not path.is_file():
        raise ModelNotFoundError(f"{directory} has no tokenizer.json (needed to turn text into tokens)")
    try:
        backend = Backend.from_file(str(path))
    except Exception as error:  # the library raises a bare Exception for a file it cannot parse
        raise UnsupportedModelError(
            f"{path} is not a tokenizer.json the tokenizers library reads ({error}); download it again"
        ) from None
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    template = config.get("chat_template")
    if (directory / "chat_template.jinja").is_file():
        template = (directory / "chat_template.jinja").read_text()
    bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
    ids = set(eos_ids)
    if eos is not None and backend.token_to_id(eos) is not None:
        ids.add(backend.token_to_id(eos))
    return Tokenizer(
        backend,
        bos_token=bos,
        eos_token=eos,
        add_bos=bool(config.get("add_bos_token", False)),
        chat_template=template if isinstance(template, str) else None,
        eos_ids=tuple(sorted(ids)),
    )


def _token_text(value) -> str | None:
    if isinstance(value, dict):  # AddedToken serialized as a dict
        return value.get("content")
    return value


# llama.cpp pre-tokenizer names whose split we reproduce; others fall back to GPT-2's split.
_DIGIT_SPLITTING_PRE = {"smollm"}


def _from_gguf(source) -> Tokenizer:
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    meta = source.metadata
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UnsupportedModelError(
            f"GGUF tokenizer type {kind!r} is not supported (byte-level BPE 'gpt2' is); "
            "use the model's Hugging Face directory with tokenizer.json"
        )
    tokens = source.gguf_field("tokenizer.ggml.tokens")
    merges = source.gguf_field("tokenizer.ggml.merges") or []
    types = source.gguf_field("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {token: index for index, token in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False)
    backend = Backend(bpe)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if meta.get("tokenizer.ggml.pre") in _DIGIT_SPLITTING_PRE:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    control = [
        AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types, strict=True) if ty == 3
    ]
    backend.add_special_tokens(control)

    def token(key: str) -> str | None:
        index = meta.get(key)
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    return Tokenizer(
        backend,
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
        add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        chat_template=meta.get("tokenizer.chat_template"),
        eos_ids=source.spec.eos_token_ids,
    )
