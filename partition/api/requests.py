"""OpenAI-style request bodies -> the generation request the coordinator runs (serve --http).

`POST /v1/chat/completions` takes `messages` (rendered with the model's chat template) and
`POST /v1/completions` takes `prompt` (text, or token ids). Both take the OpenAI sampling fields
(`n`, `max_tokens` or `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stop`,
`presence_penalty`, `frequency_penalty`, `logit_bias`, `stream`, `stream_options.include_usage`) and
vLLM's `top_k`, `min_p`, `repetition_penalty`, `stop_token_ids`, `ignore_eos`, `min_tokens`,
`include_stop_str_in_output` and `skip_special_tokens`. Defaults are OpenAI's: temperature 1, and at
most 16 new tokens for completions, the rest of the context for chat. Log-probabilities are asked as
each route's OpenAI shape has it: chat's `logprobs: true` with `top_logprobs: N`, a completion's
`logprobs: N`.

A field we cannot honour (vLLM's `prompt_logprobs`, tools, a JSON response format, audio, reasoning
effort, beam search, guided or structured output, allowed or bad words, its chat template options) is
refused with a 400 that names it, never silently ignored; fields that change nothing here (`user`,
`metadata`, ...) are accepted; any other field (a typo) is refused, naming the field it most looks
like.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from partition.model.generation import (
    MAX_TOP_LOGPROBS,
    GenerationRequest,
    RepetitionWithLogprobs,
    new_tokens_overflow,
    prompt_overflow,
)
from partition.model.sampling import REPETITION_RANGE, REQUIREMENTS, SamplingError, SamplingParams

CHAT, COMPLETION = "chat", "completion"
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# field -> the values that mean "off": anything else asks for something we do not do
NEUTRAL = {
    "echo": (False, None),
    "top_logprobs": (None, 0),  # a completion asks with logprobs: N
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "suffix": (None, ""),
    # vLLM's sampling extras, beside its top_k
    "use_beam_search": (False, None),
    "allowed_token_ids": (None,),
    "bad_words": (None, []),
    "logits_processors": (None, []),
    "prompt_logprobs": (None,),
    "truncate_prompt_tokens": (None,),
    # vLLM's constrained decoding: text that would not follow the constraint is worse than a 400
    "guided_json": (None,),
    "guided_regex": (None,),
    "guided_choice": (None,),
    "guided_grammar": (None,),
    "structured_outputs": (None,),
    # vLLM's chat rendering options: the model's own template, ending in the assistant's turn, is ours
    "add_generation_prompt": (True, None),
    "continue_final_message": (False, None),
    "chat_template": (None,),
    "chat_template_kwargs": (None, {}),
    "documents": (None,),
    "spaces_between_special_tokens": (True, None),
    "length_penalty": (1, None),  # beam search's
    "priority": (0, None),  # requests are served in turn
    # OpenAI's: audio output, reasoning models, built-in tools
    "modalities": (None, ["text"]),
    "audio": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
}
# Fields that change nothing here, taken and left alone: who asks, what to keep, how to bill
NO_EFFECT = (
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "prediction",
    "prompt_cache_key",
    "safety_identifier",
    "request_id",
)
# The fields each route reads; any other field (a typo, something this endpoint does not know) is a 400
COMMON_FIELDS = (
    "model",
    "n",
    "best_of",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "min_p",
    "repetition_penalty",
    "logit_bias",
    "stop_token_ids",
    "ignore_eos",
    "min_tokens",
    "include_stop_str_in_output",
    "skip_special_tokens",
    "stream",
    "stream_options",
    "response_format",
)
# The fields one route reads and the other does not (chat's echo, vLLM's, is taken only when off)
OWN_FIELDS = {
    CHAT: frozenset({"messages", "logprobs", "top_logprobs"}),
    COMPLETION: frozenset({"prompt", "logprobs", "echo"}),
}
_KNOWN_FIELDS = {
    kind: frozenset({*own, *COMMON_FIELDS, *NEUTRAL, *NO_EFFECT}) for kind, own in OWN_FIELDS.items()
}
# What stream_options may hold: include_usage, and OpenAI's include_obfuscation, which only pads
# chunks against length side channels (nothing here). Any other key is refused as a field is.
STREAM_OPTIONS = frozenset({"include_usage", "include_obfuscation"})
# Token ids a request may end on (stop_token_ids): each is kept from the sampler until min_tokens
MAX_STOP_TOKEN_IDS = 256
# Stop strings a request may give, and characters in each (OpenAI takes 4). Every one is looked for at
# the end of the text after every token, holding back what could begin one: at these limits 0.56 ms per
# token at worst on a 2-core host, against 5.8 k strings of 1.2 k characters slowing a decode 8x.
MAX_STOPS, MAX_STOP_CHARS = 16, 256
# Choices a request may ask for (`n`): each is a session of its own, prompt and all (api/choices.py)
MAX_CHOICES = 16


class ApiError(Exception):
    """An HTTP error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}  # sent with the answer (a 405's Allow, a 401's WWW-Authenticate)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Served:
    """What the endpoint serves: requests are checked against it."""

    model: str  # the name replies give, and requests may give in `model` (the plan's, or the first alias)
    tokenizer: object  # partition.model.tokenizer.Tokenizer
    vocab_size: int
    max_context: int  # tokens per session (prompt + output)
    model_max_context: int  # the most the model holds: a --max-context above it would not help
    aliases: tuple[str, ...] = ()  # more names requests may give (serve --served-model-name's others)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.model, *self.aliases)


@dataclass(frozen=True)
class TextRequest:
    kind: str  # CHAT or COMPLETION
    model: str  # the served model's name, as replies name it
    generation: GenerationRequest
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the token counts
    echo: str | None = None  # a completion's `echo`: the prompt's text, which the answer's text begins with
    n: int = 1  # choices: answers to the same request, each sampled on its own


def parse_body(data: bytes) -> dict:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON ({error})") from None
    except ValueError as error:  # Python's limit on the digits of an int: no field takes such a number
        raise ApiError(400, f"the request body has a number too long to read ({error})") from None
    except RecursionError:  # arrays or objects nested thousands deep: no field is nested so
        raise ApiError(400, "the request body is nested too deeply to read; no field needs nesting") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def text_request(kind: str, body: dict, served: Served) -> TextRequest:
    """The checked request; ApiError names the first field that is wrong and says what would do."""
    model, max_context = served.model, served.max_context
    check_model(body, served)
    _check_known(kind, body)
    for name, neutral in NEUTRAL.items():
        if name in OWN_FIELDS[kind]:
            continue
        value = body.get(name)
        if not any(_same(value, v) for v in neutral):
            raise ApiError(400, f"{name}={json.dumps(value)} is not supported here; leave it out", name)
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise ApiError(
            400, "only the text response format is supported; leave response_format out", "response_format"
        )
    ids = chat_ids(body, served) if kind == CHAT else _prompt_ids(body, served)
    holder = "a session of this deployment"
    problem = prompt_overflow(len(ids), max_context, holder)
    if problem:
        raise ApiError(
            400,
            f"{problem}; shorten it" + _larger_context(served),
            "messages" if kind == CHAT else "prompt",
            "context_length_exceeded",
        )
    room = max_context - len(ids)
    default = room if kind == CHAT else min(room, COMPLETION_DEFAULT_MAX_TOKENS)
    max_tokens, asked = _max_tokens(body, default)
    problem = new_tokens_overflow(len(ids), max_tokens, max_context, holder, asked)
    if problem:
        raise ApiError(400, problem, asked, "context_length_exceeded")
    stream = boolean_field(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not (isinstance(options, dict) and stream):
        raise ApiError(400, "stream_options must be an object, and only with stream=true", "stream_options")
    check_fields(options or {}, STREAM_OPTIONS, within="stream_options.")
    include_usage = boolean_field(options or {}, "include_usage", False, "stream_options.include_usage")
    boolean_field(options or {}, "include_obfuscation", True, "stream_options.include_obfuscation")
    logprobs = _chat_logprobs(body) if kind == CHAT else _completion_logprobs(body)
    echo = _echo(body, served, ids, stream) if kind == COMPLETION else None
    try:
        generation = GenerationRequest(
            prompt_ids=ids,
            max_new_tokens=max_tokens,
            sampling=_sampling(body, served.vocab_size),
            stop=_stop(body),
            context=len(ids) + max_tokens,
            logprobs=logprobs,
            ignore_eos=boolean_field(body, "ignore_eos", False),
            stop_token_ids=_stop_token_ids(body, served.vocab_size),
            min_tokens=_min_tokens(body, max_tokens, asked),
            stop_in_text=boolean_field(body, "include_stop_str_in_output", False),
            skip_special=boolean_field(body, "skip_special_tokens", True),
            prompt_logprobs=logprobs if echo is not None else None,
        )
    except RepetitionWithLogprobs as error:
        raise ApiError(400, str(error), "repetition_penalty") from None
    return TextRequest(kind, model, generation, stream, include_usage, echo, _choices(body))


def _choices(body: dict) -> int:
    """`n`, and vLLM's `best_of` only where it asks for nothing more (every choice generated is returned)."""
    value = body.get("n")
    if value is not None and (type(value) is not int or not 1 <= value <= MAX_CHOICES):
        raise ApiError(400, f"n must be a whole number in [1, {MAX_CHOICES}], got {json.dumps(value)}", "n")
    n = value or 1
    best_of = body.get("best_of")
    if best_of is not None and not (type(best_of) is int and best_of == n):
        raise ApiError(
            400,
            f"best_of={json.dumps(best_of)} is not supported here (only best_of equal to n, {n}: every "
            "choice generated is returned); leave it out",
            "best_of",
        )
    return n


def check_model(body: dict, served: Served) -> None:
    """A request naming another model than the one served is a 404 naming both."""
    asked = body.get("model")
    if asked is not None and asked not in served.names:
        names = " or ".join(map(repr, served.names))
        raise ApiError(
            404,
            f"the model {asked!r} is not served here; this endpoint serves {names} (GET /v1/models)",
            "model",
            "model_not_found",
        )


def _check_known(kind: str, body: dict) -> None:
    """Refuse a field no route of this endpoint reads: a typo would otherwise be taken for its default
    (`"temprature": 0` sampling at temperature 1), as OpenAI refuses it too."""
    text_field = "messages" if kind == CHAT else "prompt"
    for name in body:
        if name in ("messages", "prompt") and name != text_field:  # the other route's
            other = "/v1/completions" if name == "prompt" else "/v1/chat/completions"
            raise ApiError(400, f"this route takes {text_field}, not {name} (that is {other}'s)", name)
    check_fields(body, _KNOWN_FIELDS[kind])


def check_fields(body: dict, known: frozenset[str], within: str = "") -> None:
    """Refuse the first field of `body` not `known`, naming the known one it most looks like; `within`
    names the object `body` is the value of ("stream_options.")."""
    for name in body:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ApiError(400, f"unknown field {within + name!r}{hint}; leave it out", within + name)


def _larger_context(served: Served) -> str:
    if served.max_context >= served.model_max_context:
        return f" ({served.model!r} holds at most {served.model_max_context} tokens)"
    return f" (or serve with a larger --max-context, at most {served.model_max_context}, the model's)"


def chat_ids(
    body: dict, served: Served, add_generation_prompt: bool = True, add_special: bool = False
) -> list[int]:
    """The token ids of `messages` rendered with the model's chat template (which holds its own special
    tokens), ending in the assistant's turn unless `add_generation_prompt` is false."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", "messages")
    if len(messages) > served.max_context:  # rendering them holds the GIL: 0.7 s for 250 k here
        raise ApiError(
            400,
            f"{len(messages)} messages are more than this endpoint takes: at most {served.max_context}, "
            "as many as a session holds tokens; send fewer",
            "messages",
            "context_length_exceeded",
        )
    rendered = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object with role and content", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ApiError(
                400, f"{where}.role {json.dumps(role)} is not one of {', '.join(ROLES)}", f"{where}.role"
            )
        rendered.append(
            {"role": ROLES[role], "content": _content(message.get("content"), f"{where}.content")}
        )
    try:
        text = served.tokenizer.render_chat(rendered, add_generation_prompt)
    except Exception as error:  # the template's raise_exception or a model without one
        raise ApiError(
            400, f"the model's chat template refused these messages: {error}", "messages"
        ) from None
    return encoded(text, served, "messages", add_special)


def encoded(text: str, served: Served, param: str, add_special: bool = True) -> list[int]:
    """`text`'s token ids; a text too long for any session is refused before it is tokenized (a
    second per megabyte here, which a client must not be able to make the endpoint spend)."""
    size, per_token = len(text.encode("utf-8")), served.tokenizer.max_token_bytes
    if size > served.max_context * per_token:
        raise ApiError(
            400,
            f"the text of {param} is {size} bytes, more than a session's {served.max_context} tokens "
            f"can hold (no token of this model stands for more than {per_token} bytes); shorten it"
            + _larger_context(served),
            param,
            "context_length_exceeded",
        )
    return served.tokenizer.encode(text, add_special=add_special)


def _content(content, where: str) -> str:
    if isinstance(content, str):
        return _unicode(content, where)
    if isinstance(content, list):  # content parts: text only
        texts = []
        for part in content:
            if not (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                raise ApiError(400, f"{where}: only text parts ({{type: text, text}}) are supported", where)
            texts.append(_unicode(part["text"], where))
        return "\n".join(texts)  # as vLLM renders parts: "joke." and "Answer" must not run together
    raise ApiError(400, f"{where} must be a string or a list of text parts", where)


def _unicode(text: str, where: str) -> str:
    """`text` when it is Unicode a tokenizer takes: JSON's "\\ud800" escapes (and the bytes Python's JSON
    reader lets through for them) give lone surrogates, which are no characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ApiError(
            400,
            f"{where} holds a lone surrogate (U+{ord(text[error.start]):04X} at character {error.start}), "
            "which is no character: send valid Unicode (a pair of surrogate escapes makes one character)",
            where,
        ) from None
    return text


def _same(value, neutral) -> bool:
    """JSON equality: false is not 0 and 1.0 is 1."""
    return value == neutral and isinstance(value, bool) == isinstance(neutral, bool)


def _prompt_ids(body: dict, served: Served) -> list[int]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt:
            raise ApiError(400, "prompt is empty: give at least one token of text", "prompt")
        return encoded(_unicode(prompt, "prompt"), served, "prompt")
    if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
        vocab = served.vocab_size
        if not all(0 <= t < vocab for t in prompt):
            raise ApiError(400, f"prompt token ids must lie in [0, {vocab})", "prompt")
        return list(prompt)
    raise ApiError(400, "prompt must be a string or a list of token ids (one prompt per request)", "prompt")


def _chat_logprobs(body: dict) -> int | None:
    """How many alternatives each token's log-probability comes with, or None: `logprobs: true` asks,
    `top_logprobs` says how many (OpenAI's rule: only with `logprobs: true`)."""
    asked = boolean_field(body, "logprobs", False)
    top = _alternatives(body, "top_logprobs")
    if top and not asked:
        raise ApiError(
            400, "top_logprobs needs logprobs: true; set it, or leave top_logprobs out", "top_logprobs"
        )
    return (top or 0) if asked else None


def _completion_logprobs(body: dict) -> int | None:
    """A completion's `logprobs: N`: each token's log-probability with the N likeliest in its place
    (false, as some clients send it, asks for none)."""
    return None if body.get("logprobs") is False else _alternatives(body, "logprobs")


def _alternatives(body: dict, name: str) -> int | None:
    """`name`'s count of likeliest tokens to show per token, None when it is absent or null."""
    value = body.get(name)
    if value is not None and (type(value) is not int or not 0 <= value <= MAX_TOP_LOGPROBS):
        raise ApiError(
            400,
            f"{name} must be a whole number in [0, {MAX_TOP_LOGPROBS}] (or null), got {json.dumps(value)}",
            name,
        )
    return value


def _echo(body: dict, served: Served, ids: list[int], stream: bool) -> str | None:
    """The prompt's text, for a completion that asks to `echo` it (with `logprobs`, the prompt's tokens
    are scored too: what evaluation harnesses ask); None when it does not."""
    if not boolean_field(body, "echo", False):
        return None
    if stream:
        raise ApiError(400, "echo is answered whole here: send it without stream", "echo")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    return prompt if isinstance(prompt, str) else served.tokenizer.decode(ids, skip_special=False)


def _max_tokens(body: dict, default: int) -> tuple[int, str]:
    """The new tokens asked for, and the field that asked (the one an error must name): OpenAI's
    max_completion_tokens over its older max_tokens when both are given, each checked."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (type(value) is not int or value < 1):
            raise ApiError(400, f"{name} must be a whole number >= 1, got {json.dumps(value)}", name)
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(name)
    return (default, name) if value is None else (value, name)


def _sampling(body: dict, vocab: int) -> SamplingParams:
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)  # OpenAI's range, within ours
    top_k = body.get("top_k", 0)
    if top_k is None or (type(top_k) is int and top_k == -1):  # vLLM: -1 = off; -1.0 is no whole number
        top_k = 0
    if type(top_k) is not int or top_k < 0:
        raise ApiError(
            400, f"top_k must be a whole number >= 0 (0 or -1 = off), got {json.dumps(top_k)}", "top_k"
        )
    top_p = _sampling_field(body, "top_p", 1.0, (int, float))
    seed = _sampling_field(body, "seed", None, (int,))
    presence = _number(body, "presence_penalty", 0.0, -2.0, 2.0)  # OpenAI's range, SamplingParams'
    frequency = _number(body, "frequency_penalty", 0.0, -2.0, 2.0)
    min_p = _number(body, "min_p", 0.0, 0.0, 1.0)  # vLLM's range, SamplingParams'
    repetition = _number(body, "repetition_penalty", 1.0, *REPETITION_RANGE)
    bias = _logit_bias(body, vocab)
    try:  # SamplingParams holds the ranges
        return SamplingParams(temperature, top_k, top_p, seed, presence, frequency, min_p, repetition, bias)
    except SamplingError as error:
        raise _sampling_error(error.field, body.get(error.field)) from None


def _logit_bias(body: dict, vocab: int) -> tuple[tuple[int, float], ...]:
    """OpenAI's `logit_bias`: {"token id": bias}, as (id, bias) pairs."""
    value = body.get("logit_bias")
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ApiError(
            400,
            f"logit_bias must be an object mapping token ids (as strings) to numbers in [-100, 100], got "
            f"{json.dumps(value)}",
            "logit_bias",
        )
    pairs: dict[int, float] = {}
    for key, bias in value.items():
        token = (
            int(key) if key.isascii() and key.isdigit() and len(key) < 20 else vocab
        )  # int() of 5 k digits fails
        if token >= vocab:
            raise ApiError(400, f"logit_bias: {key!r} is no token id in [0, {vocab})", "logit_bias")
        if token in pairs:  # "7" and "07"
            raise ApiError(400, f"logit_bias names token {token} twice", "logit_bias")
        if type(bias) not in (int, float) or not -100 <= bias <= 100:
            raise ApiError(
                400,
                f"logit_bias[{key!r}] must be a number in [-100, 100], got {json.dumps(bias)}",
                "logit_bias",
            )
        pairs[token] = float(bias)
    return tuple(pairs.items())


def _sampling_field(body: dict, name: str, default, types: tuple[type, ...]):
    """`name`'s value, `default` when it is absent; one of another type (false is no number) is refused."""
    value = body.get(name)
    if value is None:
        return default
    if type(value) not in types:  # NaN, infinities and numbers too wide fail the range
        raise _sampling_error(name, value)
    return value


def _sampling_error(name: str, value) -> ApiError:
    return ApiError(400, f"{name} must be {REQUIREMENTS[name]}, got {json.dumps(value)}", name)


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    # NaN and infinities fail the bounds, and an int too wide for a float compares as it is
    if type(value) not in (int, float) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number in [{low:g}, {high:g}], got {json.dumps(value)}", name)
    return float(value)


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "stop must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(
            400,
            f"stop takes at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters each; got "
            f"{len(stops)}, the longest {max(map(len, stops))} characters",
            "stop",
        )
    return tuple(stops)


def _stop_token_ids(body: dict, vocab: int) -> tuple[int, ...]:
    ids = body.get("stop_token_ids")
    if ids is None:
        return ()
    if not (isinstance(ids, list) and all(type(i) is int and 0 <= i < vocab for i in ids)):
        raise ApiError(400, f"stop_token_ids must be a list of token ids in [0, {vocab})", "stop_token_ids")
    if len(ids) > MAX_STOP_TOKEN_IDS:
        raise ApiError(
            400, f"stop_token_ids takes at most {MAX_STOP_TOKEN_IDS} ids, got {len(ids)}", "stop_token_ids"
        )
    return tuple(ids)


def _min_tokens(body: dict, max_tokens: int, max_field: str) -> int:
    value = body.get("min_tokens")
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise ApiError(400, f"min_tokens must be a whole number >= 0, got {json.dumps(value)}", "min_tokens")
    if value > max_tokens:
        raise ApiError(400, f"min_tokens ({value}) must be at most {max_field} ({max_tokens})", "min_tokens")
    return value


def boolean_field(body: dict, name: str, default: bool, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{param or name} must be true or false, got {json.dumps(value)}", param or name)
    return value
