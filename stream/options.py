"""What the command line's run options mean, shared by file runs (:mod:`stream.cli`) and live runs
(:mod:`stream.live.run`): the output containers by extension and the flags that override config keys."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from stream.config import PipelineConfig, load_config, with_override

VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
"""Video output extensions → FFmpeg muxer."""

COMMAND_LINE_OVERRIDES = {
    # option dest: (config key, flag as the user writes it)
    "crf": ("encoder.crf", "--crf"),
    "preset": ("encoder.preset", "--preset"),
    "provider": ("inference.provider", "--provider"),
    "device_id": ("inference.device_id", "--device-id"),
    "precision": ("inference.precision", "--precision"),
    "deinterlace": ("decoder.deinterlace", "--deinterlace"),
    "saturation": ("colour.saturation", "--saturation"),
    "reference_strength": ("guidance.reference_strength", "--reference-strength"),
}
LIST_OPTIONS = {
    # option dest: the config list its values are added to
    "reference": ("guidance", "references"),
    "keyframe": ("guidance", "keyframes"),
}


def with_paths_from(config: PipelineConfig, folder: Path) -> PipelineConfig:
    """``config`` with the relative image paths of its ``guidance`` section taken from ``folder``
    (the YAML file's own folder, as a file beside it would be named)."""
    def placed(path: str) -> str:
        return path if not path or Path(path).is_absolute() else str(folder / path)

    guidance = config.guidance
    keyframes = []
    for text in guidance.keyframes:
        position, separator, image = text.partition("=")
        keyframes.append(f"{position}={placed(image.strip())}" if separator else text)
    return dataclasses.replace(config, guidance=dataclasses.replace(
        guidance, keyframes=keyframes, references=[placed(path) for path in guidance.references]))


def run_config(args: argparse.Namespace) -> PipelineConfig:
    """The config file (or the defaults) with the command line's overrides, each checked like the
    YAML key it replaces; raises ConfigError."""
    config = load_config(args.config)
    if args.config is not None:
        config = with_paths_from(config, Path(args.config).resolve().parent)
    for dest, (key, flag) in COMMAND_LINE_OVERRIDES.items():
        value = getattr(args, dest, None)
        if value is not None:
            config = with_override(config, key, value, flag)
    for dest, (section, key) in LIST_OPTIONS.items():
        values = getattr(args, dest, None)
        if values:
            owner = getattr(config, section)
            config = dataclasses.replace(config, **{section: dataclasses.replace(
                owner, **{key: [*getattr(owner, key), *values]})})
    return config
