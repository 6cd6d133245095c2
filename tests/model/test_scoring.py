"""A prompt's scores packed as a worker holding the head sends them back, and read back on the edge: the
same entries as taken from every logit."""

import pytest
import torch

from partition.model.generation import token_logprob
from partition.model.scoring import prompt_scores, read_scored, scored_rows


@pytest.mark.parametrize("top", [0, 1, 5, 20])
def test_packed_scores_read_back_as_the_entries_taken_from_every_logit(top):
    generator = torch.Generator().manual_seed(top)
    rows = torch.log_softmax(torch.randn(9, 49152, generator=generator) * 4, -1)
    ids = torch.randint(0, 49152, (10,), generator=generator).tolist()
    packed = scored_rows(rows, ids[1:], top)
    assert packed.shape == (9, 1 + 2 * top) and packed.dtype == torch.float32  # 4 + 8 x top bytes a token
    expected = [token_logprob(rows[i], ids[i + 1], top) for i in range(9)]
    assert read_scored(packed, ids[1:], top) == expected  # ids exact, values the same float32s
    assert prompt_scores(torch.cat([rows, rows[:1]]), ids, top) == expected  # the last row is not scored
    assert prompt_scores(rows[:1], ids[:1], top) == []  # a prompt of one token: nothing before it
    assert read_scored(scored_rows(rows[:0], [], top), [], top) == []  # a step whose last row is the prompt's


def test_scores_of_another_shape_than_asked_are_refused():
    packed = scored_rows(torch.log_softmax(torch.randn(3, 50), -1), [1, 2, 3], 2)
    with pytest.raises(ValueError, match=r"scored rows of shape \[3, 5\], but 3 x 7 were asked"):
        read_scored(packed, [1, 2, 3], 3)
    with pytest.raises(ValueError, match=r"but 2 x 5 were asked"):
        read_scored(packed, [1, 2], 2)


def test_scores_holding_no_token_id_where_an_id_goes_are_refused():
    packed = scored_rows(torch.log_softmax(torch.randn(2, 50), -1), [1, 2], 1)
    for bad in (50.0, -1.0, 2.5, float("nan"), float("inf")):
        forged = packed.clone()
        forged[1, 1] = bad
        with pytest.raises(ValueError, match=r"no token ids in \[0, 50\)"):
            read_scored(forged, [1, 2], 1, vocab=50)
    assert read_scored(packed, [1, 2], 1, vocab=50) == read_scored(packed, [1, 2], 1)
