"""Errors that end a run with a one-line message instead of a traceback."""
from __future__ import annotations


class InputError(Exception):
    """Bad input from the user (file, option, model, config): exit code 2, nothing written."""

    exit_code = 2


class PipelineError(Exception):
    """A stage failed or died while running: exit code 1."""

    exit_code = 1


def error_lines(exc: Exception) -> str:
    """The exception's message as ``error:`` lines (a config may have several problems, one a line)."""
    return "\n".join(f"error: {line}" for line in str(exc).splitlines() or [type(exc).__name__])
