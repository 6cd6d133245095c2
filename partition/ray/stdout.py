"""Keep serve's stdout for its answers under Ray (serve).

A Ray driver prints the cluster's error messages (a raylet's end with its last log lines, an actor's
death) on sys.stdout from a thread of its own, whatever `log_to_driver` says. Written between the
buffered pieces of a `--json` line, they cut it in two. Inside `answers_stream()`, sys.stdout is
stderr, so whatever else prints there lands on stderr, and serve writes its answers to the stream it
yields: the process's real stdout.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO


@contextlib.contextmanager
def answers_stream() -> Iterator[TextIO]:
    sys.stdout.flush()
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding=sys.stdout.encoding)
    saved, sys.stdout = sys.stdout, sys.stderr
    try:
        yield answers
    finally:
        sys.stdout = saved
        answers.close()
