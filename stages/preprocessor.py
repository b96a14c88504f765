"""Preprocessor stage: RGB frame → the model's input (L − 50 at the model's size).

The full-resolution RGB frame travels on with the message: the encoder needs the frame's own L
for the final merge.
"""
from __future__ import annotations

from typing import Iterable

from stages.lab import model_input
from stream.messages import Message
from stream.stage import Stage


class Preprocessor(Stage):
    name = "preprocessor"
    input_link = "frames"
    output_link = "tensors"
    reads = ("frame",)

    def handle(self, message: Message) -> Iterable[Message]:
        message.arrays["l_input"] = model_input(message.arrays["frame"], self.job.model_input_size)
        return (message,)


STAGE = Preprocessor
