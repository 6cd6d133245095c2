"""`generate` and `serve` refuse a request that cannot fit its context, naming what limits it, as the HTTP
API does (context_length_exceeded), instead of running to the context's end or blaming the prompt."""

from types import SimpleNamespace

import pytest

from partition.cli import build_parser, main
from partition.cli.serve import answer
from partition.errors import ConfigError


def test_generate_refuses_more_new_tokens_than_the_models_context_holds(capsys):
    argv = ["generate", "--prompt", "Once upon a time", "--max-new-tokens", "100000", "--threads", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "partition generate: error: the prompt (" in err and "and --max-new-tokens (100000) need" in err
    assert "over the 8192 tokens of smollm2-135m's context; ask for at most" in err, err


def _answerer(max_context: int, prompt_tokens: int):
    tokenizer = SimpleNamespace(encode=lambda text: list(range(prompt_tokens)))
    plan = SimpleNamespace(model=SimpleNamespace(name="smollm2-135m"))
    return SimpleNamespace(
        tokenizer=tokenizer, deployment=SimpleNamespace(max_context=max_context, plan=plan)
    )


def test_serve_names_max_context_when_a_prompt_does_not_fit_it():
    args = build_parser().parse_args(["serve", "--plan", "plan.json", "--max-context", "4"])
    with pytest.raises(ConfigError) as error:
        answer(_answerer(max_context=4, prompt_tokens=10), args, "ten tokens")
    assert str(error.value) == (
        "the prompt has 10 tokens, but a session (--max-context) holds 4; "
        "shorten it or serve with a larger --max-context"
    )


def test_serve_names_the_models_context_when_deploy_lowered_max_context_to_it():
    args = build_parser().parse_args(["serve", "--plan", "plan.json", "--max-context", "10000"])
    with pytest.raises(ConfigError, match="but smollm2-135m's context holds 8192; shorten it$"):
        answer(_answerer(max_context=8192, prompt_tokens=9000), args, "a long prompt")


def test_a_prompt_that_is_no_utf8_is_refused_naming_the_byte(capsys):
    """Python keeps an argument's bytes that are no UTF-8 as lone surrogates, which the tokenizer would
    fail on with a TypeError: the prompt is refused first, naming the byte."""
    assert main(["generate", "--prompt", "caf\udce9", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "partition generate: error: the prompt is not UTF-8 text (byte 0xe9 at character 3)" in err, err
    assert "Traceback" not in err


def test_serve_answers_every_line_of_its_input_and_names_the_lines_it_refuses(capsys):
    import io

    from partition.cli.serve import _answer_lines

    answerer = SimpleNamespace(
        tokenizer=SimpleNamespace(encode=lambda text: list(range(len(text.split())))),
        deployment=SimpleNamespace(
            max_context=8, plan=SimpleNamespace(model=SimpleNamespace(name="smollm2-135m"))
        ),
        logits_note=lambda *_: None,
        answer=lambda request, show: show(f"{len(request.prompt_ids)} tokens answered"),
    )
    args = build_parser().parse_args(
        ["serve", "--plan", "plan.json", "--max-context", "8", "--max-new-tokens", "1"]
    )
    lines = ["hi there\n", "\n", "word " * 20 + "\n", "caf\udce9\n", "hello\n"]
    out = io.StringIO()
    assert _answer_lines(answerer, args, lines, out) == 2
    assert out.getvalue() == "2 tokens answered\n1 tokens answered\n"
    err = capsys.readouterr().err
    assert "line 3: the prompt has 20 tokens, but a session (--max-context) holds 8" in err
    assert "line 4: the prompt is not UTF-8 text (byte 0xe9 at character 3)" in err
    assert "2 prompt(s) refused, the others answered" in err
