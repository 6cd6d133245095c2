"""Choosing the next token from logits, on the edge: greedy, or temperature with top-k / top-p / min-p and
a seed, after OpenAI's logit bias and penalties and vLLM's repetition penalty."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from partition.errors import ConfigError

# torch.Generator.manual_seed takes a signed or an unsigned 64-bit integer (a negative one wraps
# around) and overflows on anything wider
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 64) - 1
REPETITION_RANGE = (0.01, 100.0)
# field -> what its value must be: the one statement of each range, which every interface's error quotes
REQUIREMENTS = {
    "temperature": "a finite number >= 0 (0 = greedy)",
    "top_k": "a whole number >= 0 (0 = off)",
    "top_p": "a number in (0, 1] (1 = off)",
    "seed": f"a whole number in [{SEED_MIN}, {SEED_MAX}]",
    "presence_penalty": "a number in [-2, 2] (0 = off)",
    "frequency_penalty": "a number in [-2, 2] (0 = off)",
    "min_p": "a number in [0, 1] (0 = off)",
    "repetition_penalty": "a number in [0.01, 100] (1 = off)",
    "logit_bias": "token ids, each once, mapped to numbers in [-100, 100]",
}


class SamplingError(ConfigError):
    """A sampling parameter outside its range; `field` names it as SamplingParams does."""

    def __init__(self, field: str, value) -> None:
        super().__init__(f"{field.replace('_', '-')} must be {REQUIREMENTS[field]}, got {value}")
        self.field = field
        self.requirement = REQUIREMENTS[field]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy (argmax)
    top_k: int = 0  # keep the k most likely tokens; 0 keeps all
    top_p: float = 1.0  # keep the smallest set whose probability reaches p
    seed: int | None = None  # makes sampling reproducible
    # OpenAI's: subtracted from the logit of each token already drawn in this answer, once (presence)
    # and once per time it was drawn (frequency), before temperature, top-k and top-p, as vLLM does
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # vLLM's: keep the tokens at least min_p times as likely as the likeliest (after temperature, before
    # top-k and top-p, as vLLM applies it)
    min_p: float = 0.0
    # vLLM's (and Hugging Face's): the logit of each token of the prompt or the answer so far divided by
    # it where positive, multiplied where negative; before the penalties above, as vLLM applies it. On
    # raw logits only: it is not the same on log-probabilities, which differ by a constant
    repetition_penalty: float = 1.0
    # OpenAI's: (token id, bias) pairs, each bias added to its token's logit before anything else (as
    # vLLM applies it): -100 keeps a token out, 100 all but forces it
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < math.inf:  # NaN too; at inf every logit, -inf too, becomes NaN
            raise SamplingError("temperature", self.temperature)
        if self.top_k < 0:
            raise SamplingError("top_k", self.top_k)
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingError("top_p", self.top_p)
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise SamplingError("seed", self.seed)
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:  # NaN too
                raise SamplingError(name, getattr(self, name))
        if not 0.0 <= self.min_p <= 1.0:  # NaN too
            raise SamplingError("min_p", self.min_p)
        # bounded so that float32 logits stay finite once divided or multiplied (a logit of 0 times an
        # infinite penalty would be NaN); beyond these it changes nothing more anyway
        if not REPETITION_RANGE[0] <= self.repetition_penalty <= REPETITION_RANGE[1]:  # NaN too
            raise SamplingError("repetition_penalty", self.repetition_penalty)
        ids = [token for token, _ in self.logit_bias]
        if len(set(ids)) != len(ids) or not all(t >= 0 and -100 <= b <= 100 for t, b in self.logit_bias):
            raise SamplingError("logit_bias", dict(self.logit_bias))

    @property
    def penalizes(self) -> bool:
        """Whether a penalty (presence, frequency) moves the logits of the tokens drawn."""
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def repeats(self) -> bool:
        """Whether the repetition penalty moves the logits of the prompt's and the answer's tokens."""
        return self.repetition_penalty != 1.0

    @property
    def lifts(self) -> bool:
        """Whether a penalty may raise a token's logit: then a token drawn may come from below any
        number of the largest logits (a worker holding the head must send every one)."""
        lifted = self.presence_penalty < 0 or self.frequency_penalty < 0 or self.repetition_penalty < 1
        return lifted or any(bias > 0 for _, bias in self.logit_bias)

    @property
    def tokens_biased_down(self) -> int:
        """How many tokens logit_bias pushes down (below as many others at most)."""
        return sum(1 for _, bias in self.logit_bias if bias < 0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def deciding_logits(self) -> int | None:
        """How many of the largest logits decide the next token: 1 for greedy, k with top-k, None (all
        of them) for temperature or top-p sampling alone. Ties with the last of them count as well."""
        if self.greedy:
            return 1
        return self.top_k or None


FLOAT32_TINY = torch.finfo(torch.float32).tiny


class Sampler:
    def __init__(self, params: SamplingParams, prompt_ids: Sequence[int] = ()):
        """`prompt_ids`: the request's prompt, whose tokens the repetition penalty counts."""
        self.params = params
        self._prompt_ids = torch.tensor(sorted(set(prompt_ids)), dtype=torch.long) if params.repeats else None
        self._bias_V: torch.Tensor | None = None  # logit_bias over the vocabulary, made at the first draw
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def __call__(self, logits_V: torch.Tensor, drawn: list[int] | None = None) -> int:
        """The next token from logits [V] (or log-probabilities: the same draw), given the tokens
        `drawn` so far in this answer (what the penalties count)."""
        if self.params.logit_bias:
            logits_V = logits_V.float() + self._bias(logits_V.numel())
        if self.params.repeats:
            logits_V = self._repeated(logits_V, drawn or [])
        if self.params.penalizes and drawn:
            logits_V = self._penalized(logits_V, drawn)
        if self.params.greedy:
            return int(torch.argmax(logits_V))
        # the largest logit made 0 first: a temperature near 0 then sends the rest to -inf, not to inf
        # (inf / inf is NaN, which no sampler can draw from)
        logits_V = logits_V.float()
        # a temperature below float32's smallest normal would round to 0 in the division (0 / 0 = NaN);
        # at that one the sampler is already greedy among the largest logits
        temperature = max(self.params.temperature, FLOAT32_TINY)
        logits_V = (logits_V - logits_V.max()) / temperature
        if self.params.min_p:  # p / p_max = exp(logit - max logit), which is 0 for the likeliest now
            logits_V = logits_V.masked_fill(logits_V < math.log(self.params.min_p), float("-inf"))
        if self.params.top_k:
            kth = torch.topk(logits_V, min(self.params.top_k, logits_V.numel())).values[-1]
            logits_V = logits_V.masked_fill(logits_V < kth, float("-inf"))
        probs = torch.softmax(logits_V, dim=-1)
        if self.params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # drop a token once the mass before it already reaches top_p (the first always stays)
            drop = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) >= self.params.top_p
            drop[0] = False  # a top_p that rounds to 0 in float32 would drop it too
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def _bias(self, vocab: int) -> torch.Tensor:
        if self._bias_V is None:
            ids, biases = zip(*self.params.logit_bias, strict=True)
            self._bias_V = torch.zeros(vocab).index_put_((torch.tensor(ids),), torch.tensor(biases))
        return self._bias_V

    def _repeated(self, logits_V: torch.Tensor, drawn: list[int]) -> torch.Tensor:
        seen = torch.zeros(logits_V.numel(), dtype=torch.bool)
        seen[self._prompt_ids] = True
        seen[torch.tensor(drawn, dtype=torch.long)] = True
        logits_V = logits_V.float()
        penalty = self.params.repetition_penalty
        return torch.where(seen, torch.where(logits_V > 0, logits_V / penalty, logits_V * penalty), logits_V)

    def _penalized(self, logits_V: torch.Tensor, drawn: list[int]) -> torch.Tensor:
        counts = torch.bincount(torch.tensor(drawn), minlength=logits_V.numel()).to(torch.float32)
        penalty = self.params.frequency_penalty * counts + self.params.presence_penalty * (counts > 0)
        return logits_V.float() - penalty
