"""Log-probabilities in OpenAI's shapes (serve --http): a chat reply's `logprobs.content` and a text
completion's `logprobs` (tokens, token_logprobs, top_logprobs, text_offset), whole or chunk by chunk.

Each token is shown as its text and, in chat, its bytes: a token may hold part of a character, which its
text alone shows as U+FFFD.
"""

from __future__ import annotations

from partition.api.requests import CHAT
from partition.model.generation import TokenLogprob

# What a log-probability too small for float32 (-inf) is written as: JSON has no infinity (vLLM's value)
LOGPROB_FLOOR = -9999.0
# Tokens decoded together to find what the last one adds to the text: a character spans at most 4 (one
# byte each), and the window's first may begin within one, which it shows as U+FFFD both times
CHARACTER_WINDOW = 8


class LogprobShapes:
    """Renders the log-probabilities of one request's tokens, in the order they came; a completion's
    tokens and text offsets run on from one call to the next (one call per stream chunk)."""

    def __init__(self, kind: str, tokenizer, skip_special: bool = True) -> None:
        self.kind = kind
        self.tokenizer = tokenizer
        self.skip_special = skip_special  # whether the answer's text leaves special tokens out
        self._ids: list[int] = []  # a completion's tokens so far
        self._offset = 0  # characters of the completion's text before the next token

    def render(self, entries: list[TokenLogprob], unscored: int | None = None, echoed: int = 0) -> dict:
        """`unscored`: a completion's echoed prompt begins with this token, which nothing came before:
        it is shown with null for its log-probabilities; the first `echoed` entries are the rest of the
        prompt (its special tokens are part of its text). A token that ended the answer adds no text."""
        return self._chat(entries) if self.kind == CHAT else self._completion(entries, unscored, echoed)

    def _chat(self, entries: list[TokenLogprob]) -> dict:
        content = []
        for entry in entries:
            top = [self._token(token_id, logprob) for token_id, logprob in entry.top]
            shown = self._token(entry.token_id, entry.logprob)
            if entry.ends:  # no part of the content
                shown |= {"token": "", "bytes": []}
            content.append(shown | {"top_logprobs": top})
        return {"content": content, "refusal": None}

    def _completion(self, entries: list[TokenLogprob], unscored: int | None, echoed: int) -> dict:
        said = [(unscored, True)] if unscored is not None else []
        said += [(entry.token_id, i < echoed) for i, entry in enumerate(entries) if not entry.ends]
        tokens, offsets = [], []
        for token_id, in_prompt in said:
            tokens.append(self._added_text(token_id, skip_special=self.skip_special and not in_prompt))
            offsets.append(self._offset)
            self._offset += len(tokens[-1])
        if entries and entries[-1].ends:
            tokens.append("")
            offsets.append(self._offset)
        lead = [] if unscored is None else [None]
        return {
            "tokens": tokens,
            "token_logprobs": lead + [_finite(entry.logprob) for entry in entries],
            "top_logprobs": lead + [self._alternatives(entry) for entry in entries],
            "text_offset": offsets,
        }

    def _added_text(self, token_id: int, skip_special: bool) -> str:
        """What `token_id` adds to the completion's text, as the text shows it: "" for a token that ends
        within a character, and the whole character from the one that completes it; so the tokens join
        into the text and each offset points into it."""
        self._ids.append(token_id)
        window = self._ids[-CHARACTER_WINDOW:]
        decode = self.tokenizer.decode
        before = decode(window[:-1], skip_special).rstrip("\ufffd") if len(window) > 1 else ""
        after = decode(window, skip_special).rstrip("\ufffd")
        return after[len(before) :] if after.startswith(before) else self._text(token_id)

    def _alternatives(self, entry: TokenLogprob) -> dict[str, float]:
        """A completion's `top_logprobs`: the likeliest tokens by their text, and the drawn one (as
        OpenAI gives up to logprobs + 1); of two that read the same, the likelier one's value."""
        alternatives: dict[str, float] = {}
        for token_id, logprob in (*entry.top, (entry.token_id, entry.logprob)):
            alternatives.setdefault(self._text(token_id), _finite(logprob))
        return alternatives

    def _token(self, token_id: int, logprob: float) -> dict:
        raw = self.tokenizer.token_bytes(token_id)
        return {
            "token": raw.decode("utf-8", errors="replace"),
            "logprob": _finite(logprob),
            "bytes": list(raw),
        }

    def _text(self, token_id: int) -> str:
        return self.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")


def _finite(logprob: float) -> float:
    return logprob if logprob >= LOGPROB_FLOOR else LOGPROB_FLOOR  # NaN too
