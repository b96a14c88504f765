"""What a batch works on: the INPUT arguments expanded into files, each with its output path.

An INPUT is a file, a folder (searched recursively for video and still-image files) or a text file
listing paths (``.txt`` or ``.lst``, one per line; blank lines and lines starting with ``#``
ignored; relative paths are relative to the list). Outputs mirror each input's path relative to its
root (the folder given, or for a single file or a listed path, the file's own folder) under OUTDIR.

Output extensions, by the single-file command's rules: a video keeps a container we write
(.mp4, .m4v, .mov, .mkv) and otherwise becomes .mp4; a still keeps an image format we write and
otherwise (a single-picture .gif) becomes .png.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stream.errors import InputError
from stream.options import VIDEO_FORMATS
from stream.still_image import ANIMATION_SUFFIXES, IMAGE_SUFFIXES, is_still_image

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                  ".vob", ".dv", ".flv", ".wmv", ".3gp", ".ogv", ".mxf", ".y4m"}
"""Suffixes a folder search picks up as video (a listed or named file is tried whatever its suffix)."""
LIST_SUFFIXES = {".txt", ".lst"}


@dataclass(frozen=True)
class BatchItem:
    """One input file and where its output goes; ``relative``: the output's path under OUTDIR;
    ``refusal``: why it cannot be colorized, found while listing it ("" = none known yet)."""

    source: Path
    relative: Path
    is_image: bool
    refusal: str = ""


def output_relative(relative: Path, is_image: bool) -> Path:
    """The output's path under OUTDIR for an input at ``relative`` (see the module's rules)."""
    suffix = relative.suffix.lower()
    if is_image:
        return relative if suffix in IMAGE_SUFFIXES else relative.with_suffix(".png")
    return relative if suffix in VIDEO_FORMATS else relative.with_suffix(".mp4")


def _item(source: Path, root: Path) -> BatchItem:
    try:
        is_image, refusal = is_still_image(source), ""
    except InputError as exc:  # this file fails with its reason; the batch goes on
        is_image, refusal = False, str(exc)
    return BatchItem(source, output_relative(source.relative_to(root), is_image), is_image, refusal)


def _from_folder(folder: Path) -> list[BatchItem]:
    wanted = VIDEO_SUFFIXES | IMAGE_SUFFIXES | ANIMATION_SUFFIXES
    return [_item(path, folder) for path in sorted(folder.rglob("*"))
            if path.is_file() and path.suffix.lower() in wanted and not path.name.startswith(".")]


def _from_list(listing: Path) -> list[BatchItem]:
    items = []
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        path = Path(text) if Path(text).is_absolute() else listing.parent / text
        if not path.is_file():
            raise InputError(f"{listing}, line {number}: not a file: {text}")
        items.append(_item(path, path.parent))
    return items


def expand_inputs(inputs: list[str], outdir: Path) -> list[BatchItem]:
    """The files to colorize, in order, each once. Raises InputError for an INPUT that does not
    exist, a list naming a missing file, two inputs that would write the same output, or an input
    inside OUTDIR's own state folder."""
    items: list[BatchItem] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            items.extend(_from_folder(path))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            items.extend(_from_list(path))
        elif path.is_file():
            items.append(_item(path, path.parent))
        else:
            raise InputError(f"input not found: {text}")
    seen: dict[Path, Path] = {}
    unique = []
    outdir = outdir.resolve()
    for item in items:
        source = item.source.resolve()
        if source.is_relative_to(outdir):
            continue  # a folder input that holds OUTDIR: never colorize our own outputs
        if seen.get(item.relative) == source:
            continue
        if item.relative in seen:
            raise InputError(f"{seen[item.relative]} and {source} would both be written to "
                             f"{outdir / item.relative} (outputs mirror the path below each folder given, or "
                             "each listed file's own folder): give their common parent folder as the input, "
                             "or run them into different -o folders")
        seen[item.relative] = source
        unique.append(item)
    if not unique:
        raise InputError("no video or image files found in the inputs given")
    return unique
