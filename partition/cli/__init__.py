"""The `partition` command line: one small module per subcommand, nothing heavy at import.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`, and imports torch,
grpc and friends inside `run`, so `partition --help` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator

from partition.errors import PartitionError

# name -> (module, one-line help). Order is the order of the user's path.
COMMANDS: dict[str, tuple[str, str]] = {
    "lab": (
        "partition.cli.lab",
        "emulate unequal devices on this machine (namespaces, tbf, delay, CPU quota)",
    ),
    "worker": ("partition.cli.worker", "serve one stage of a plan over gRPC"),
    "profile": ("partition.cli.profile", "measure per-unit costs of a model on this machine (device.json)"),
    "plan": ("partition.cli.plan", "choose the split of the model over a cluster and write plan.json"),
    "serve": ("partition.cli.serve", "deploy a plan on its workers and generate through the split"),
    "bench": (
        "partition.cli.bench",
        "measure a plan: latency metrics, and every stage and link against its prediction",
    ),
    "demo": ("partition.cli.demo", "the whole story on the embedded model: lab, profile, plan, serve, bench"),
    "generate": ("partition.cli.generate", "generate text with the whole model in this process"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="partition",
        description="Split a transformer across an edge device and servers, then serve it.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


class Terminated(BaseException):
    """SIGTERM or SIGHUP reached a command; a BaseException, so that no `except Exception` stops it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, _frame) -> None:
    # These signals' default action ends the process on the spot, and the local workers that
    # --spawn-local started would outlive it. Unwind instead, as Ctrl-C does, so every `finally`
    # (stop the workers, close the channels) runs. Commands that serve until SIGTERM set their own.
    raise Terminated(signum)


@contextlib.contextmanager
def _unwinding_on_termination() -> Iterator[None]:
    signals = (signal.SIGTERM, signal.SIGHUP)
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set them
        yield
        return
    previous = [signal.signal(signum, _terminate) for signum in signals]
    try:
        yield
    finally:
        for signum, handler in zip(signals, previous, strict=True):
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # before a command ran: nothing to stop but this
        print("partition: stopped by SIGINT (Ctrl-C)", file=sys.stderr)
        return 130
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with _unwinding_on_termination():
            return int(args._module.run(args) or 0)
    except PartitionError as error:
        print(f"partition {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"partition {args.command}: stopped by SIGINT (Ctrl-C)", file=sys.stderr)
        return 130
    except Terminated as stop:
        print(f"partition {args.command}: stopped by {stop}", file=sys.stderr)
        return 128 + stop.signum
