"""Report files of the model tools (``colorize evaluate``, ``evaluate-video``, ``compare``,
``bench-model``): one way to write them, one error line when that fails."""
from __future__ import annotations

import json
from pathlib import Path

from stream.errors import InputError


def write_json_report(path: Path, payload: dict) -> None:
    """Write a report as indented JSON, creating its folder; a failure is an InputError naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write JSON report {path}: {exc.strerror or exc}") from None
