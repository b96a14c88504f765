"""Still images: colorized in-process with the same colour math as the video pipeline.

Starting four processes for one picture would cost more than the picture; the math (model_input,
predict_ab, merge_ab) is the same code the stages run.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2

from models.runtime import ColorModel
from stages.lab import merge_ab, model_input
from stream.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def colorize_image(source: Path, destination: Path, model: ColorModel) -> tuple[int, int]:
    """Colorize ``source`` into ``destination`` (written to a temporary name, then renamed).

    Returns the image's (height, width). Raises InputError for an unreadable image.
    """
    bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"not an image file OpenCV can read: {source}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ab = model.predict_ab(model_input(rgb, model.input_size)[None])[0]
    result = cv2.cvtColor(merge_ab(rgb, ab), cv2.COLOR_RGB2BGR)
    tmp = destination.with_name(f".{destination.stem}.colorize-{os.getpid()}{destination.suffix}")
    try:
        if not cv2.imwrite(str(tmp), result):
            raise InputError(f"cannot write image {destination}")
        tmp.replace(destination)
    finally:
        tmp.unlink(missing_ok=True)
    return rgb.shape[0], rgb.shape[1]
