"""Argument types shared by the subcommands: a number or text no run could use is refused while the
command line is parsed, as a usage error that names the flag (`argument --threads: must be ...`),
instead of as a traceback from torch, protobuf or the metrics once the run has begun."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from partition.artifacts import TMP_SUFFIX
from partition.errors import ConfigError

NAME_MAX = 255  # bytes in one file name: Linux's NAME_MAX, and most file systems' limit


def whole_number(minimum: int = 1, zero_means: str = "", maximum: int | None = None) -> Callable[[str], int]:
    """An int of at least `minimum` (and at most `maximum`); with `zero_means`, at least 0, and the error
    says what 0 means."""

    def parse(text: str) -> int:
        value = int(text)
        if zero_means and value < 0:
            raise argparse.ArgumentTypeError(f"must be 0 ({zero_means}) or more, got {value}")
        if not zero_means and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse says "invalid int value: 'x'" for text that is no number
    return parse


def output_file(text: str) -> Path:
    """A file a run writes when it ends: refused at once when it cannot be one (a folder, a path under
    a file, or `-`), instead of once the run's work is done. Missing folders are made when it is written."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a file")
    if text == "-":  # taken by many tools for standard output, but our commands print their report there
        raise argparse.ArgumentTypeError(
            "'-' (standard output) cannot take the file: this command prints its report there; give a file path"
        )
    path = Path(text)
    try:
        return _checked_output(text, path)
    except OSError as error:  # a name too long for the file system, a folder not searchable, ...
        raise argparse.ArgumentTypeError(f"{text}: {error.strerror or error}; give another path") from None


def _checked_output(text: str, path: Path) -> Path:
    # written through a sibling with TMP_SUFFIX (artifacts.write_atomically): that name must fit too
    if len(os.fsencode(path.name + TMP_SUFFIX)) > NAME_MAX:
        raise argparse.ArgumentTypeError(
            f"{text}: the file name is too long (at most {NAME_MAX - len(TMP_SUFFIX)} bytes); give a shorter one"
        )
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file in it")
    if path.exists() and not path.is_file():
        # a device, a pipe or a socket (/dev/stdout, /dev/null): the file is written beside it and
        # renamed over it, which would put a file where the device was
        raise argparse.ArgumentTypeError(
            f"{text} is not a regular file (a device, a pipe, a socket); give a file"
        )
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise argparse.ArgumentTypeError(
                    f"{folder} is a file, so {text} cannot be made; give another path"
                )
            break
    return path


output_file.__name__ = "path"

# Image formats a plot is written in, by the file's suffix (each one matplotlib writes without extras).
IMAGE_SUFFIXES = (".png", ".svg", ".pdf")


def image_file(text: str) -> Path:
    """An `output_file` whose suffix names an image format IMAGE_SUFFIXES holds."""
    path = output_file(text)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text}: the image format is taken from the suffix; give a file ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    return path


image_file.__name__ = "path"


def check_device(device: str) -> None:
    """A torch device this machine has, or a ConfigError that says what to give (before any model loads)."""
    import torch  # here: parsing a command line must not load torch

    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no CUDA device; use --device cpu")


def positive_number(unit: str, zero_allowed: bool = False, smallest: float = 0.0) -> Callable[[str], float]:
    """A finite float above 0 (or at 0 with `zero_allowed`; or at least `smallest`, where a tinier one
    cannot be measured), in `unit` (which the error says)."""

    def parse(text: str) -> float:
        value = float(text)
        if not (math.isfinite(value) and (value >= 0 if zero_allowed else value > 0)):
            wanted = f"0 {unit} or more" if zero_allowed else f"more than 0 {unit}"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        if value < smallest:
            raise argparse.ArgumentTypeError(f"must be at least {smallest:g} {unit}, got {text}")
        return value

    parse.__name__ = "float"  # argparse says "invalid float value: 'x'" for text that is no number
    return parse


def non_empty(why: str) -> Callable[[str], str]:
    """Text that is not empty; `why` says what an empty one would do."""

    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(
                f"must be a non-empty string ({why}); give the text or leave it out"
            )
        return text

    return parse
