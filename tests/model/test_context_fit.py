"""The context checks the CLI and the HTTP API share (model/generation.py): where the edge is, and what
the message tells the user to ask for."""

from partition.model.generation import new_tokens_overflow, prompt_overflow


def test_a_prompt_fits_only_while_it_leaves_room_for_one_token():
    assert prompt_overflow(9, 10, "a session") is None
    assert prompt_overflow(10, 10, "a session") == "the prompt has 10 tokens, but a session holds 10"


def test_new_tokens_fit_up_to_the_last_slot_and_the_message_says_how_many_would():
    assert new_tokens_overflow(6, 4, 10, "a session", "max_tokens") is None
    assert new_tokens_overflow(6, 5, 10, "a session", "max_tokens") == (
        "the prompt (6 tokens) and max_tokens (5) need 11 tokens, over the 10 tokens of a session; "
        "ask for at most 4 new tokens"
    )
