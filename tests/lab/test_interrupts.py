"""Signals held while `lab up` claims its bridge (no root needed): each acts once the claim is recorded."""

import os
import signal

from partition.lab.lab import _interrupts_held


def test_signals_held_during_a_claim_each_act_after_it_an_ignored_one_hiding_none():
    heard = []
    before = {
        signal.SIGHUP: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # as under nohup
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda number, _frame: heard.append(number)),
    }
    try:
        with _interrupts_held():
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGTERM)
            assert heard == []  # held until the block ends
        assert heard == [signal.SIGTERM]
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
