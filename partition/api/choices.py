"""A request's `n` choices (serve --http -> serve): each one generated in a session of its own, all at
once, the request ending with the first choice that fails.

Each choice is a request of its own to the coordinator (partition.coordinator.answer): it waits for a
session slot as any request does and prefills the prompt itself, so n choices cost n requests, and
those beyond the workers' slots wait their turn. With a seed, choice i samples with seed + i, as vLLM
seeds them: the choices differ, and the whole reply is reproducible. A request of one choice is
answered in the caller's thread.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from partition.coordinator.answer import Answer, Answerer
from partition.model.generation import GenerationRequest, TokenLogprob
from partition.model.sampling import SEED_MAX

# (choice index, text) and (choice index, a token's log-probabilities), as a choice's answer goes on
OnText = Callable[[int, str], None]
OnToken = Callable[[int, TokenLogprob], None]


class ChoiceDropped(Exception):
    """Raised in a choice's checks once another choice of its request failed: it is no longer wanted."""


def choice_request(request: GenerationRequest, index: int) -> GenerationRequest:
    """Choice `index` of `request`: seeded with seed + index (past the largest seed, around to the
    smallest unsigned ones, as torch's generator takes a seed modulo 2^64)."""
    seed = request.sampling.seed
    if index == 0 or seed is None:
        return request
    shifted = seed + index if seed + index <= SEED_MAX else seed + index - (SEED_MAX + 1)
    return dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, seed=shifted))


def answer_choices(
    answerer: Answerer,
    request: GenerationRequest,
    n: int,
    new_check: Callable[[], Callable[[], None]],
    on_text: OnText | None = None,
    on_token: OnToken | None = None,
) -> list[Answer]:
    """The answers of `request`'s `n` choices, in their order. `new_check` makes one choice's
    still-wanted check (each choice asks its own: the client's socket is polled from its thread); a
    choice's check also fails once another choice failed, and the first failure is raised."""
    if n == 1:
        return [_answer(answerer, request, 0, new_check(), on_text, on_token)]
    answers: list[Answer | None] = [None] * n
    failures: list[BaseException] = []  # in the order they happened
    failed, order = threading.Event(), threading.Lock()

    def run(index: int) -> None:
        check = new_check()

        def wanted() -> None:
            if failed.is_set():
                raise ChoiceDropped(f"another choice of this request failed; choice {index} is dropped")
            check()

        try:
            answers[index] = _answer(
                answerer, choice_request(request, index), index, wanted, on_text, on_token
            )
        except BaseException as error:  # each thread's failure ends the request, as one would
            with order:
                failures.append(error)
            failed.set()

    threads = [threading.Thread(target=run, args=(i,), name=f"choice-{i}", daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:  # what the first one failed of, not the drops it caused
        raise next((f for f in failures if not isinstance(f, ChoiceDropped)), failures[0])
    return answers  # type: ignore[return-value]  # every choice answered


def _answer(
    answerer: Answerer,
    request: GenerationRequest,
    index: int,
    wanted: Callable[[], None],
    on_text: OnText | None,
    on_token: OnToken | None,
) -> Answer:
    def text(chunk: str) -> None:  # a client gone is seen with every chunk of text, streamed or not
        wanted()
        if on_text is not None:
            on_text(index, chunk)

    token = (lambda entry: on_token(index, entry)) if on_token is not None else None
    return answerer.answer(request, text, wanted, token)
