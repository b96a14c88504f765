"""Checks on where an output file will go, made before any stage starts (exit code 2 on failure)."""
from __future__ import annotations

import os
from pathlib import Path

from stream.errors import InputError


def check_output_location(output: Path) -> None:
    """Raise :class:`InputError` unless ``output`` can be created: its folder exists and is writable,
    and the name is not a folder."""
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory is not writable: {parent}")
    if output.is_dir():
        raise InputError(f"output is a directory: {output}")


def existing_output(output: Path, overwrite: bool, keep: bool) -> bool:
    """FFmpeg's rule for an output file that already exists: True means skip the run (``keep``, -n).

    Raises :class:`InputError` when it exists and neither ``overwrite`` (-y) nor ``keep`` was given,
    or when both were; the existing file is never touched here.
    """
    if overwrite and keep:
        raise InputError("-y (overwrite) and -n (keep existing outputs) contradict each other: give one")
    if not output.exists():
        return False
    if keep:
        return True
    if not overwrite:
        raise InputError(f"output exists: {output} (-y replaces it, -n keeps it and skips the run)")
    return False
