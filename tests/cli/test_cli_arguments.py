"""Flags no run could use are usage errors that name the flag, refused while parsing (before torch,
protobuf or the metrics see them); 0 keeps its meaning where it has one."""

import pytest

from partition.cli import build_parser

WORKER = ["worker", "--listen", "127.0.0.1:0", "--name", "w"]
GENERATE = ["generate", "--prompt", "hi"]
SERVE = ["serve", "--plan", "plan.json"]
BENCH = ["bench", "--plan", "plan.json"]
PLAN = ["plan", "--model", "smollm2-135m"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*GENERATE, "--threads", "-1"], "argument --threads: must be 0 (all cores) or more, got -1"),
        ([*WORKER, "--threads", "-1"], "argument --threads: must be 0 (torch's choice) or more, got -1"),
        ([*SERVE, "--threads", "-1"], "argument --threads: must be 0 (the default) or more, got -1"),
        ([*BENCH, "--threads", "-2"], "argument --threads: must be 0 (the default) or more, got -2"),
        ([*SERVE, "--max-sessions", "-1"], "argument --max-sessions: must be at least 1, got -1"),
        ([*SERVE, "--max-sessions", "0"], "argument --max-sessions: must be at least 1, got 0"),
        ([*SERVE, "--max-context", "-5"], "argument --max-context: must be at least 1, got -5"),
        ([*SERVE, "--max-context", "0"], "argument --max-context: must be at least 1, got 0"),
        (
            [*SERVE, "--reconnect-wait", "2.5"],
            "argument --reconnect-wait: must be at least 3 seconds, got 2.5",
        ),
        ([*SERVE, "--recheck", "-1"], "argument --recheck: must be 0 seconds or more, got -1"),
        ([*WORKER, "--max-batch", "0"], "argument --max-batch: must be at least 1, got 0"),
        ([*PLAN, "--sessions", "0"], "argument --sessions: must be at least 1, got 0"),
        ([*PLAN, "--prompt-tokens", "0"], "argument --prompt-tokens: must be at least 1, got 0"),
        ([*PLAN, "--new-tokens", "-3"], "argument --new-tokens: must be at least 1, got -3"),
        # every worker refuses more sessions than MAX_SESSIONS at deploy: said as serve's command is read
        ([*SERVE, "--max-sessions", "1025"], "argument --max-sessions: must be at most 1024, got 1025"),
        (
            [*SERVE, "--http-allowed-origin", "localhost:3000"],
            "argument --http-allowed-origin: 'localhost:3000' is not an origin; give scheme://host[:port]",
        ),
        (
            [*SERVE, "--http-allowed-origin", "https://a.example/app"],
            "'https://a.example/app' is not an origin",
        ),
        ([*BENCH, "--tbt-deadline", "-1"], "argument --tbt-deadline: must be more than 0 seconds, got -1"),
        ([*BENCH, "--tbt-deadline", "0"], "argument --tbt-deadline: must be more than 0 seconds, got 0"),
        ([*BENCH, "--ttft-deadline", "-1"], "argument --ttft-deadline: must be more than 0 seconds, got -1"),
        (
            [*BENCH, "--tbt-deadline", "1e-320"],
            "argument --tbt-deadline: must be at least 1e-06 seconds, got 1e-320",
        ),
        ([*BENCH, "--warmup", "-1"], "argument --warmup: must be 0 (none) or more, got -1"),
        (
            [*BENCH, "--ttft-deadline", "nan"],
            "argument --ttft-deadline: must be more than 0 seconds, got nan",
        ),
        ([*BENCH, "--new-tokens", "0"], "argument --new-tokens: must be at least 1, got 0"),
        ([*BENCH, "--prompt-tokens", "0"], "argument --prompt-tokens: must be at least 1, got 0"),
        ([*WORKER, "--kv-budget-mb", "-5"], "argument --kv-budget-mb: must be more than 0 MiB, got -5"),
        ([*WORKER, "--kv-budget-mb", "0"], "argument --kv-budget-mb: must be more than 0 MiB, got 0"),
        ([*WORKER, "--idle-timeout", "-1"], "argument --idle-timeout: must be more than 0 seconds, got -1"),
        ([*WORKER, "--idle-timeout", "0"], "argument --idle-timeout: must be more than 0 seconds, got 0"),
        ([*WORKER, "--grace", "-1"], "argument --grace: must be 0 seconds or more, got -1"),
        ([*WORKER, "--grace", "inf"], "argument --grace: must be 0 seconds or more, got inf"),
        (["profile", "--model", "m", "--threads", "0"], "argument --threads: must be at least 1, got 0"),
        ([*GENERATE, "--stop", ""], "argument --stop: must be a non-empty string"),
        ([*SERVE, "--stop", ".", "--stop", ""], "argument --stop: must be a non-empty string"),
        (
            [*GENERATE, "--temperature", "1", "--seed", "1234567890123456789012345678900"],
            "argument --seed: must be a whole number in [-9223372036854775808, 18446744073709551615], "
            "got 1234567890123456789012345678900",
        ),
        ([*SERVE, "--seed", "18446744073709551616"], "argument --seed: must be a whole number in [-9223"),
        ([*GENERATE, "--seed", "-9223372036854775809"], "argument --seed: must be a whole number in [-9223"),
    ],
)
def test_an_impossible_value_is_a_usage_error_that_names_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_text_that_is_no_number_still_says_so(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*WORKER, "--threads", "two"])
    assert "argument --threads: invalid int value: 'two'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args([*GENERATE, "--seed", "1.5"])
    assert "argument --seed: invalid int value: '1.5'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        ([*GENERATE, "--threads", "0"], "threads", 0),  # all cores
        ([*WORKER, "--threads", "0"], "threads", 0),  # torch's choice
        ([*SERVE, "--threads", "0"], "threads", 0),  # the plan's edge threads
        (BENCH, "new_tokens", None),  # not given: the plan's workload
        (BENCH, "prompt_tokens", None),
        (BENCH, "ttft_deadline", None),  # not given: predicted TTFT + 0.3 s
        ([*BENCH, "--tbt-deadline", "0.05"], "tbt_deadline", 0.05),
        ([*WORKER, "--kv-budget-mb", "0.5"], "kv_budget_mb", 0.5),
        ([*WORKER, "--grace", "0"], "grace", 0.0),  # end running calls at once
        (["profile", "--model", "smollm2-135m"], "threads", None),  # torch's choice
        ([*SERVE, "--max-context", "1", "--max-sessions", "1"], "max_context", 1),
        ([*SERVE, "--stop", "\n", "--stop", "."], "stop", ["\n", "."]),
        ([*GENERATE, "--seed", "18446744073709551615"], "seed", 2**64 - 1),
        ([*SERVE, "--seed", "-9223372036854775808"], "seed", -(2**63)),
        (GENERATE, "seed", None),  # not given: a fresh seed each run
    ],
)
def test_what_a_run_can_use_still_parses(argv, flag, value):
    assert getattr(build_parser().parse_args(argv), flag) == value


def test_serve_help_says_the_waits_serve_uses(capsys):
    from partition.cli.serve import RECONNECT_WAIT_MIN_S
    from partition.coordinator.replan import RECHECK_S
    from partition.transport.channels import RECONNECT_MAX_MS, RECONNECT_WAIT_S

    assert RECONNECT_WAIT_MIN_S == RECONNECT_MAX_MS / 1000 + 1  # one reconnect attempt and a margin

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    said = " ".join(capsys.readouterr().out.split())  # argparse wraps the help's lines
    assert f"is planned around (default {RECONNECT_WAIT_S:g})" in said
    assert f"profiled --cluster (default {RECHECK_S:g})" in said


def test_the_command_line_is_parsed_without_importing_torch():
    """`partition --help` and every parser stay instant (torch takes a second to import), so Ctrl-C in
    that second has nothing to interrupt but the parse."""
    import subprocess
    import sys

    probe = (
        "import sys; from partition.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_ctrl_c_while_the_command_line_is_parsed_is_said_as_any_other(monkeypatch, capsys):
    import partition.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["plan"]) == 130
    assert capsys.readouterr().err == "partition: stopped by SIGINT (Ctrl-C)\n"
