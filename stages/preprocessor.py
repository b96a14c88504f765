"""Preprocessor stage: RGB frame → the model's input (L − 50 at the model's size) and the frame's
full-resolution lightness.

The RGB frame goes no further: the encoder's merge needs only the frame's own L, which travels as
uint16 (:func:`stages.lab.lightness_code`, 2 bytes a pixel instead of 3). Computing it here moves
a third of the merge's work off the encoder, the pipeline's serial step, onto a stage that can have
replicas.
"""
from __future__ import annotations

from typing import Iterable

from stages.lab import lightness_code, model_input
from stream.messages import Message
from stream.stage import Stage


class Preprocessor(Stage):
    name = "preprocessor"
    input_link = "frames"
    output_link = "tensors"
    reads = ("frame",)
    consumes = ("frame",)

    def handle(self, message: Message) -> Iterable[Message]:
        frame = message.arrays.pop("frame")
        message.arrays["l_input"] = model_input(frame, self.job.model_input_size)
        message.arrays["lightness"] = lightness_code(frame)
        return (message,)


STAGE = Preprocessor
