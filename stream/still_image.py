"""Still images: colorized in-process with the same colour math as the video pipeline.

Starting four processes for one picture would cost more than the picture; the math (model_input,
predict_ab, merge_ab) is the same code the stages run.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from models.runtime import ColorModel
from stages.lab import merge_ab, model_input
from stream.config import ColourSettings
from stream.errors import InputError
from stream.photo_metadata import EXIF_SUFFIXES, read_metadata, write_with_metadata

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
"""Suffixes of still images, as inputs and as outputs."""
ANIMATION_SUFFIXES = {".gif", ".webp"}
"""Suffixes that may hold one picture (a still) or an animation (a video, read by FFmpeg)."""


def is_still_image(path: Path) -> bool:
    """Whether ``path`` (an existing file) is colorized as a still: an image suffix, or a GIF/WebP
    that holds a single picture. An animated GIF is a video.

    Raises InputError for an animated WebP: FFmpeg's WebP decoder reads single pictures only."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES | ANIMATION_SUFFIXES:
        return False
    if suffix not in ANIMATION_SUFFIXES:
        return True
    try:
        pictures = cv2.imcount(str(path))
    except cv2.error:
        return suffix in IMAGE_SUFFIXES  # unreadable: reported as a bad image, not probed as video
    if pictures > 1 and suffix == ".webp":
        raise InputError(f"{path} is an animated WebP ({pictures} pictures), which FFmpeg cannot decode: "
                         "save it as a GIF or a video first")
    return pictures == 1


def read_with_decoder_messages(path: Path, flags: int) -> tuple[np.ndarray | None, list[str]]:
    """``cv2.imread(path, flags)`` and the lines its C decoders (libjpeg, libpng...) printed on the
    process's standard error meanwhile, captured instead of reaching the user raw: libjpeg reads a
    truncated JPEG with only a "Premature end of JPEG file" there, and fills in the rest."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            image = cv2.imread(str(path), flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        lines = captured.read().decode(errors="replace").splitlines()
    return image, [line.strip() for line in lines if line.strip()]


ALPHA_SUFFIXES = {".png", ".webp", ".tif", ".tiff"}
"""Output formats that hold an alpha channel."""


def read_alpha(source: Path, height: int, width: int) -> np.ndarray | None:
    """The image's alpha channel as uint8 H×W (16-bit alpha scaled to 8 bits), or None when it has
    none. Only formats that can hold one are read a second time for it."""
    if source.suffix.lower() not in ALPHA_SUFFIXES | {".gif"}:
        return None
    raw, _ = read_with_decoder_messages(source, cv2.IMREAD_UNCHANGED)  # said once, by colorize_image
    if raw is None or raw.ndim != 3 or raw.shape[2] not in (2, 4) or raw.shape[:2] != (height, width):
        return None
    alpha = raw[:, :, -1]
    return (alpha >> 8).astype(np.uint8) if alpha.dtype == np.uint16 else alpha.astype(np.uint8)


def colorize_image(source: Path, destination: Path, model: ColorModel,
                   colour: ColourSettings = ColourSettings(), palette=None,
                   keyframe: Path | None = None) -> tuple[int, int, list[str]]:
    """Colorize ``source`` into ``destination`` (written to a temporary name, then renamed), the
    colour put on as ``colour`` says. An alpha channel (transparency) is kept unchanged where the
    output format has one (PNG, WebP, TIFF), and so are EXIF, ICC profile and XMP
    (:mod:`stream.photo_metadata`) where it holds them (JPEG, PNG, WebP, TIFF).

    ``palette``: a :class:`stages.guidance.PaletteGuide` re-weighting the model's colour toward
    reference photos; ``keyframe``: a colour version of the image (an image file of the same
    aspect), whose colour is used instead of the model's.

    Returns the image's (height, width) and warnings for the user (a damaged or truncated source,
    transparency or metadata the output format cannot hold). Raises InputError for an unreadable image or a keyframe of another aspect.
    """
    bgr, decoder_messages = read_with_decoder_messages(source, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"not an image file OpenCV can read: {source}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if keyframe is not None:
        from stages.guidance import check_aspect, image_ab, read_colour_image

        coloured = read_colour_image(keyframe, "--keyframe")
        check_aspect(coloured, rgb.shape[1], rgb.shape[0], "--keyframe", keyframe)
        ab = image_ab(coloured, (rgb.shape[1], rgb.shape[0]))
    else:
        ab = model.predict_ab(model_input(rgb, model.input_size)[None])[0]
        if palette is not None:
            ab = palette.apply(ab)
    result = cv2.cvtColor(merge_ab(rgb, ab, colour), cv2.COLOR_RGB2BGR)
    warnings = []
    if decoder_messages:
        warnings.append(f"{source} is damaged or truncated (decoder: {decoder_messages[0]}): "
                        "the part it could not read is filler, not picture")
    alpha = read_alpha(source, *rgb.shape[:2])
    if alpha is not None:
        if destination.suffix.lower() in ALPHA_SUFFIXES:
            result = np.dstack([result, alpha])
        elif (alpha < 255).any():
            warnings.append(f"{destination.suffix} has no alpha channel: the transparency of {source} is "
                            f"dropped (use .png, .webp or .tif to keep it)")
    metadata = read_metadata(source)
    suffix = destination.suffix.lower()
    if metadata and suffix not in EXIF_SUFFIXES:
        warnings.append(f"{destination.suffix} holds no photo metadata: the {metadata.names()} of {source} "
                        "are dropped (use .jpg, .png, .webp or .tif to keep them)")
    tmp = destination.with_name(f".{destination.stem}.colorize-{os.getpid()}{destination.suffix}")
    try:
        if metadata and suffix in EXIF_SUFFIXES:
            try:
                write_with_metadata(tmp, suffix, result, metadata)
            except (OSError, ValueError, RuntimeError) as exc:
                raise InputError(f"cannot write image {destination}: {exc}") from None
        elif not cv2.imwrite(str(tmp), result):
            raise InputError(f"cannot write image {destination}")
        tmp.replace(destination)
    finally:
        tmp.unlink(missing_ok=True)
    return rgb.shape[0], rgb.shape[1], warnings
