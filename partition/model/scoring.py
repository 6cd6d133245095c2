"""Scoring a prompt (serve: a completion's `echo` with `logprobs`, what evaluation harnesses send): at
each position, the log-probability of the token that follows it and the likeliest tokens in its place.

A worker holding the head packs them into rows of float32 values, 1 + 2 x top per position: the next
token's log-probability, then (id, log-probability) pairs, most likely first. That is what goes back
instead of every logit of every position (4 x vocabulary bytes each: 196 KB for SmolLM2, against 12
for the one alternative an evaluation harness asks). The edge reads them back here, and packs its own
the same way when it holds the head, so both give the same entries.
"""

from __future__ import annotations

import torch

from partition.model.generation import Scores, TokenLogprob, as_log_probs

# Token ids travel as float32 values, exact up to 2^24: no vocabulary comes near it
LARGEST_SCORED_VOCAB = 1 << 24


def scored_rows(log_probs_SV: torch.Tensor, next_ids: list[int], top: int) -> torch.Tensor:
    """[S, 1 + 2 * top] float32: each position's log-probability of its next token, then the `top`
    likeliest (id, log-probability), from log-probabilities [S, V]."""
    log_probs_SV = log_probs_SV.float()
    picked = log_probs_SV.gather(1, torch.tensor(next_ids, dtype=torch.long).reshape(-1, 1))
    values, ids = torch.topk(log_probs_SV, min(top, log_probs_SV.shape[1]), dim=1)
    pairs = torch.stack([ids.float(), values], dim=2).reshape(len(next_ids), 2 * ids.shape[1])  # 0 rows too
    return torch.cat([picked, pairs], dim=1)


def read_scored(
    rows: torch.Tensor, next_ids: list[int], top: int, vocab: int = LARGEST_SCORED_VOCAB
) -> list[TokenLogprob]:
    """The entries of `scored_rows`' output; ValueError when its shape is not what was asked, or an id
    in it is no token id below `vocab` (what a worker sends back is checked before it is used)."""
    if tuple(rows.shape) != (len(next_ids), 1 + 2 * top):
        raise ValueError(
            f"scored rows of shape {list(rows.shape)}, but {len(next_ids)} x {1 + 2 * top} were asked"
        )
    ids = rows[:, 1::2]
    if not bool(((ids >= 0) & (ids < vocab) & (ids == ids.round())).all()):  # NaN fails each
        raise ValueError(f"scored rows hold ids that are no token ids in [0, {vocab})")
    entries = []
    for token_id, row in zip(next_ids, rows.tolist(), strict=True):
        alternatives = tuple((int(row[i]), row[i + 1]) for i in range(1, len(row), 2))
        entries.append(TokenLogprob(token_id, row[0], alternatives))
    return entries


def scores_of(log_probs_SV: torch.Tensor, next_ids: list[int], top: int) -> list[TokenLogprob]:
    """The entries of `next_ids` from the log-probabilities of the positions before each, packed and read
    back as a worker's are, so that the edge's entries and a worker's are the same."""
    return read_scored(scored_rows(log_probs_SV, next_ids, top), next_ids, top)


def prompt_scores(log_probs_SV: torch.Tensor, token_ids: list[int], top: int) -> list[TokenLogprob]:
    """The entries of `token_ids` after the first, from the log-probabilities [S, V] of every one of
    them (the last row, whose next token is not known yet, is left out)."""
    return scores_of(log_probs_SV[:-1], token_ids[1:], top)


def local_scores(model, cache) -> Scores:
    """The prefill of `generation.local_step`'s session (slot 0 of `cache`), scored."""

    def score(token_ids: list[int], top: int) -> tuple[list[TokenLogprob], torch.Tensor]:
        rows = as_log_probs(model(torch.tensor([token_ids], dtype=torch.long), cache, [0], [0])[0])
        return prompt_scores(rows, token_ids, top), rows[-1]

    return score
