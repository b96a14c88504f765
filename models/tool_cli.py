"""The command-line edge the model tools share (``colorize evaluate``, ``evaluate-video``,
``compare``, ``bench-model``, ``quantize``): one argument type, one way to make and write a JSON
report, and one error contract: bad input prints ``error: <one line>`` on stderr and exits 2."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable

from models.runtime import ModelError
from stream.errors import InputError


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def json_ready(value):
    """``value`` (dicts, lists, scalars) with every NaN or infinity replaced by None: JSON has no
    NaN, and a figure that could not be measured is null in a report."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def write_json_report(path: Path, payload: dict) -> None:
    """Write a report as indented JSON, creating its folder; a failure is an InputError naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write JSON report {path}: {exc.strerror or exc}") from None


def run_tool(produce: Callable[[], str]) -> int:
    """A tool's main: ``produce`` does the work (writing any report files) and returns the text for
    stdout → printed, 0; a ModelError or InputError on the way → ``error: <one line>`` on stderr, 2."""
    try:
        text = produce()
    except (ModelError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0
