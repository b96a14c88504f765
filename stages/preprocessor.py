"""Preprocessor stage: a decoded frame → the model's input (L − 50 at the model's size) and the
lightness the encoder puts the colour on.

* RGB frames (``frame``): the RGB goes no further. The encoder's merge needs only the frame's own
  L, which travels as uint16 (:func:`stages.lab.lightness_code`, 2 bytes a pixel instead of 3).
* Luma frames (``luma``, 8-bit 4:2:0 sources, see :mod:`stages.decoder`): the luma plane travels on
  unchanged to be the output's, with the lightness at chroma resolution
  (:func:`stages.lab.chroma_lightness_code`), on which the encoder computes only chroma.

Either way this moves the per-pixel lightness work off the encoder, the pipeline's serial step,
onto a stage that can have replicas.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from stages.lab import chroma_lightness_code, lightness_code, luma_model_input, model_input
from stream.messages import FLAG_CARRY, Message
from stream.stage import Stage


class Preprocessor(Stage):
    name = "preprocessor"
    input_link = "frames"
    output_link = "tensors"
    reads = ("frame", "luma")
    consumes = ("frame",)

    def handle(self, message: Message) -> Iterable[Message]:
        prepare(message.arrays, self.job.model_input_size, model_runs=not message.header.flags & FLAG_CARRY)
        return (message,)


def prepare(arrays: dict[str, np.ndarray], model_input_size: tuple[int, int], model_runs: bool = True) -> None:
    """Add ``l_input`` (float32 1×h×w, L − 50; only where the model runs on the frame) and
    ``lightness`` (uint16) to a decoded frame's arrays, in place: from ``luma`` (kept) or from
    ``frame`` (RGB, removed)."""
    if "luma" in arrays:
        luma = arrays["luma"]
        if model_runs:
            arrays["l_input"] = luma_model_input(luma, model_input_size)
        arrays["lightness"] = chroma_lightness_code(luma)
    else:
        frame = arrays.pop("frame")
        if model_runs:
            arrays["l_input"] = model_input(frame, model_input_size)
        arrays["lightness"] = lightness_code(frame)


STAGE = Preprocessor
