"""Signals that stop a run the way Ctrl-C does, and the exit code that says which one it was.

A service manager stops a program with SIGTERM, a closed terminal sends SIGHUP: both get what
Ctrl-C gets (the frames in flight are finished, a file run keeps a playable ``.partial``), and the
exit code is 128 + the signal's number, as shells report it: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP).
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_received = signal.SIGINT


def _stop_like_ctrl_c(signum: int, _frame) -> None:
    global _received
    _received = signal.Signals(signum)
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, as SIGINT does."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_like_ctrl_c)


def interrupted_exit_code() -> int:
    """128 + the number of the last stop signal received (130 when it was Ctrl-C)."""
    return 128 + int(_received)
